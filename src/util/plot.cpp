#include "util/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

namespace longctx {

std::string length_label(int64_t L) {
  if (L >= 1048576 && L % 1048576 == 0) return std::to_string(L / 1048576) + "M";
  if (L >= 1024 && L % 1024 == 0) return std::to_string(L / 1024) + "K";
  return std::to_string(L);
}

static std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else o += c;
  }
  return o;
}

static std::string fmt(double v) {
  char b[32];
  if (std::fabs(v) >= 1e4 || (std::fabs(v) < 1e-2 && v != 0)) std::snprintf(b, sizeof b, "%.2g", v);
  else std::snprintf(b, sizeof b, "%.3g", v);
  return b;
}

std::string svg_line_plot(const std::vector<Series>& series, const PlotOptions& o) {
  const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  auto tx = [&](double x) { return o.logx ? std::log10(std::max(x, 1e-12)) : x; };
  for (auto& s : series)
    for (auto& [x, y] : s.points) {
      if (!std::isfinite(y)) continue;
      x0 = std::min(x0, tx(x)), x1 = std::max(x1, tx(x));
      y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  if (!(x1 > x0)) x1 = x0 + 1;
  if (!(y1 > y0)) y1 = y0 + 1;
  double pad = (y1 - y0) * 0.05;
  y0 -= pad, y1 += pad;
  const int L = 70, R = 170, T = 40, B = 50;
  int W = o.width, H = o.height, pw = W - L - R, ph = H - T - B;
  auto px = [&](double x) { return L + (tx(x) - x0) / (x1 - x0) * pw; };
  auto py = [&](double y) { return T + (1 - (y - y0) / (y1 - y0)) * ph; };
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s << "<text x=\"" << W / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" << esc(o.title) << "</text>\n";
  s << "<rect x=\"" << L << "\" y=\"" << T << "\" width=\"" << pw << "\" height=\"" << ph
    << "\" fill=\"none\" stroke=\"#333\"/>\n";
  for (int i = 0; i <= 5; ++i) {
    double yv = y0 + (y1 - y0) * i / 5, yp = py(yv);
    s << "<line x1=\"" << L << "\" x2=\"" << L + pw << "\" y1=\"" << yp << "\" y2=\"" << yp
      << "\" stroke=\"#ddd\"/><text x=\"" << L - 6 << "\" y=\"" << yp + 4 << "\" text-anchor=\"end\">" << fmt(yv)
      << "</text>\n";
    double xv = x0 + (x1 - x0) * i / 5, xp = L + pw * i / 5.0;
    s << "<text x=\"" << xp << "\" y=\"" << T + ph + 18 << "\" text-anchor=\"middle\">"
      << fmt(o.logx ? std::pow(10, xv) : xv) << "</text>\n";
  }
  s << "<text x=\"" << L + pw / 2 << "\" y=\"" << H - 10 << "\" text-anchor=\"middle\">" << esc(o.xlabel)
    << "</text>\n<text x=\"16\" y=\"" << T + ph / 2 << "\" text-anchor=\"middle\" transform=\"rotate(-90 16 "
    << T + ph / 2 << ")\">" << esc(o.ylabel) << "</text>\n";
  for (size_t k = 0; k < series.size(); ++k) {
    const char* c = colors[k % 8];
    s << "<polyline fill=\"none\" stroke=\"" << c << "\" stroke-width=\"1.6\" points=\"";
    for (auto& [x, y] : series[k].points)
      if (std::isfinite(y)) s << px(x) << "," << py(std::min(std::max(y, y0), y1)) << " ";
    s << "\"/>\n";
    if (series[k].points.size() < 40)
      for (auto& [x, y] : series[k].points)
        if (std::isfinite(y)) s << "<circle cx=\"" << px(x) << "\" cy=\"" << py(y) << "\" r=\"2.5\" fill=\"" << c << "\"/>\n";
    int ly = T + 14 + 18 * static_cast<int>(k);
    s << "<line x1=\"" << L + pw + 10 << "\" x2=\"" << L + pw + 30 << "\" y1=\"" << ly - 4 << "\" y2=\"" << ly - 4
      << "\" stroke=\"" << c << "\" stroke-width=\"2\"/><text x=\"" << L + pw + 36 << "\" y=\"" << ly << "\">"
      << esc(series[k].label) << "</text>\n";
  }
  s << "</svg>\n";
  return s.str();
}


std::string svg_heatmap(const std::vector<std::string>& rows, const std::vector<std::string>& cols,
                        const std::vector<std::vector<double>>& values, const PlotOptions& o) {
  // The left margin holds the longest row label (about 7 px a character at 12 px sans-serif).
  size_t longest = 0;
  for (auto& r : rows) longest = std::max(longest, r.size());
  const int L = std::max(90, 36 + 7 * int(longest)), T = 40, R = 20, Bm = 60;
  const int cw = std::max(60, (o.width - L - R) / std::max<int>(1, int(cols.size())));
  const int ch = 34;
  const int W = L + R + cw * int(cols.size()), H = T + Bm + ch * int(rows.size());
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s << "<text x=\"" << W / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" << esc(o.title) << "</text>\n";
  for (size_t r = 0; r < rows.size(); ++r) {
    int y = T + int(r) * ch;
    s << "<text x=\"" << L - 8 << "\" y=\"" << y + ch / 2 + 4 << "\" text-anchor=\"end\">" << esc(rows[r]) << "</text>\n";
    for (size_t c = 0; c < cols.size(); ++c) {
      double v = (r < values.size() && c < values[r].size()) ? values[r][c] : std::nan("");
      int x = L + int(c) * cw;
      char fill[32], label[32];
      if (std::isnan(v)) {
        std::snprintf(fill, sizeof fill, "#cccccc");
        std::snprintf(label, sizeof label, "n/a");
      } else {
        double t = std::clamp(v, 0.0, 1.0);
        std::snprintf(fill, sizeof fill, "rgb(%d,%d,%d)", int(215 - 180 * t), int(48 + 140 * t), int(39 + 40 * t));
        std::snprintf(label, sizeof label, "%.0f%%", 100 * v);
      }
      s << "<rect x=\"" << x << "\" y=\"" << y << "\" width=\"" << cw - 2 << "\" height=\"" << ch - 2 << "\" fill=\""
        << fill << "\"/>\n<text x=\"" << x + cw / 2 << "\" y=\"" << y + ch / 2 + 4
        << "\" text-anchor=\"middle\" fill=\"white\">" << label << "</text>\n";
    }
  }
  int yb = T + ch * int(rows.size());
  for (size_t c = 0; c < cols.size(); ++c)
    s << "<text x=\"" << L + int(c) * cw + cw / 2 << "\" y=\"" << yb + 16 << "\" text-anchor=\"middle\">" << esc(cols[c])
      << "</text>\n";
  s << "<text x=\"" << L + (W - L - R) / 2 << "\" y=\"" << H - 12 << "\" text-anchor=\"middle\">" << esc(o.xlabel)
    << "</text>\n<text x=\"16\" y=\"" << T + ch * int(rows.size()) / 2 << "\" text-anchor=\"middle\" transform=\"rotate(-90 16,"
    << T + ch * int(rows.size()) / 2 << ")\">" << esc(o.ylabel) << "</text>\n</svg>\n";
  return s.str();
}

}  // namespace longctx
