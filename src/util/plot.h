// Minimal SVG line plots (loss curves, bits per byte against context): no dependencies.
#pragma once
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

std::string svg_line_plot(const std::vector<Series>& series, const PlotOptions& o);

}  // namespace longctx
