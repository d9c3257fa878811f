#!/usr/bin/env python3
"""What the RULER answers of scripts/ruler_mix.sh's arms look like, when none is right
(docs/RESULTS.md, "RULER and lost in the middle over the zoo"). For the 8 needle tasks, per arm
and length: how many predictions have the value's form (a 7-digit number where the values are
numbers, a uuid where they are uuids), and how many of the 7-digit numbers predicted at 1536 and
4096 tokens occur anywhere in the prompt (a model that copies from its context, even the wrong
needle, would score some). Standard library only.
Usage: scripts/ruler_forms.py [runs/ruler-mix] [full,swa,...]
       scripts/ruler_forms.py --digits RULER_DIR... : for niah_single_1 (one 7-digit value), the
       digits right in place and the mean right prefix per length (chance: 10% of digits).
       (scripts/ruler_niah1.sh's runs)"""
import glob
import json
import re
import sys

if len(sys.argv) > 1 and sys.argv[1] == "--digits":
    print("| run | length | exact | digits right | mean right prefix |")
    print("|---|---|---|---|---|")
    for d in sys.argv[2:]:
        for path in sorted(glob.glob(f"{d}/*/niah_single_1.jsonl"), key=lambda p: int(p.split("/")[-2])):
            n = exact = digits = prefix = 0
            for line in open(path, encoding="utf-8"):
                j = json.loads(line)
                want = j["outputs"][0]
                m = re.search(r"\d{7}", j["prediction"])
                got = m.group(0) if m else ""
                n += 1
                exact += got == want
                digits += sum(a == b for a, b in zip(want, got))
                k = 0
                while k < min(len(want), len(got)) and want[k] == got[k]:
                    k += 1
                prefix += k
            print(f"| {d} | {path.split('/')[-2]} | {exact}/{n} | {100 * digits / (7 * n):.0f}% | {prefix / n:.1f} |")
    sys.exit(0)
out = sys.argv[1] if len(sys.argv) > 1 else "runs/ruler-mix"
arms = (sys.argv[2] if len(sys.argv) > 2 else "full,swa,infini,megalodon,fam,beacon").split(",")
lengths = [1536, 4096, 16384, 131072]
number, uuid = re.compile(r"\d{7}"), re.compile(r"[0-9a-f-]{36}")
print("| arm | " + " | ".join(f"form at {n}" for n in lengths) + " | numbers predicted at 1536 and 4096 | of them in the prompt |")
print("|---|" + "---|" * (len(lengths) + 2))
for arm in arms:
    cells, predicted, in_prompt = [], 0, 0
    for n in lengths:
        total = form = 0
        for path in sorted(glob.glob(f"{out}/{arm}/ruler/{n}/niah_*.jsonl")):
            for line in open(path, encoding="utf-8"):
                j = json.loads(line)
                outputs, p = j["outputs"], j["prediction"]
                total += 1
                if all(number.fullmatch(o) for o in outputs):
                    form += bool(re.search(r"\b\d{7}\b", p))
                elif all(uuid.fullmatch(o) for o in outputs):
                    form += bool(re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-", p))
                if n <= 4096:
                    for m in re.findall(r"\b\d{7}\b", p):
                        predicted += 1
                        in_prompt += m in j["input"]
        cells.append(f"{form}/{total}" if total else "-")
    print(f"| {arm} | " + " | ".join(cells) + f" | {predicted} | {in_prompt} |")
