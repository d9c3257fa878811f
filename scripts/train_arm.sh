# Sourced by the recipe scripts. train_arm DIR ARGS...: trains `$LONGCTX train --out DIR ARGS`
# with $THREADS threads unless DIR is complete (DIR/DONE); resumes a killed run from its last
# checkpoint. The log goes to DIR.log.
train_arm() {
  local dir=$1
  shift
  if [ -f "$dir/DONE" ]; then
    echo "[$dir] finished earlier"
    return
  fi
  local r=
  if ls "$dir"/checkpoint-* >/dev/null 2>&1; then r=--resume; fi
  echo "[$dir] training (log: $dir.log)"
  "$LONGCTX" --threads "$THREADS" train --out "$dir" $r "$@" >"$dir.log" 2>&1
  touch "$dir/DONE"
}
