// Minimal SVG line plots (loss curves, bits per byte against context): no dependencies.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace longctx {

struct Series {
  std::string label;
  std::vector<std::pair<double, double>> points;
};

struct PlotOptions {
  std::string title, xlabel, ylabel;
  bool logx = false;
  int width = 720, height = 420;
};

// A token count as an axis or column label: 1M, 4K, 1536 (the binary units RULER's lengths use).
std::string length_label(int64_t tokens);

std::string svg_line_plot(const std::vector<Series>& series, const PlotOptions& o);

// A heatmap of values in [0, 1] (red 0 .. green 1), each cell labelled in percent; NaN cells
// are grey and labelled "n/a". values[r][c] for row label r, column label c.
std::string svg_heatmap(const std::vector<std::string>& rows, const std::vector<std::string>& cols,
                        const std::vector<std::vector<double>>& values, const PlotOptions& o);

}  // namespace longctx
