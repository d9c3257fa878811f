#include "nn/rope_scaling.h"

#include <cmath>

#include "io/json_fields.h"
#include "util/error.h"

namespace longctx {

namespace {

constexpr double kPi = 3.141592653589793;

// HF's yarn helpers: the dimension whose wavelength makes `rotations` turns over `max_pos`.
double correction_dim(double rotations, int64_t dim, double base, int64_t max_pos) {
  return (double(dim) * std::log(double(max_pos) / (rotations * 2 * kPi))) / (2 * std::log(base));
}

double yarn_mscale(double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; }

}  // namespace

RopeScaling RopeScaling::parse(const nlohmann::json& j, int64_t max_position_embeddings, const std::string& where) {
  RopeScaling s;
  s.max_position = max_position_embeddings;
  if (j.is_null()) return s;
  Fields f(j, where, "model.rope_scaling");
  // HF accepts "rope_type" (current) or "type" (older configs).
  std::string t = f.get<std::string>("rope_type", "");
  std::string t_old = f.get<std::string>("type", "");
  f.check(t.empty() || t_old.empty() || t == t_old, "type", t_old, "disagrees with rope_type '" + t + "'");
  s.type = t.empty() ? t_old : t;
  f.check(s.type == "linear" || s.type == "dynamic" || s.type == "yarn" || s.type == "longrope" || s.type == "llama3",
          "rope_type", s.type.empty() ? std::string("(missing)") : s.type,
          "must be linear, dynamic, yarn, longrope or llama3");
  s.original_max = f.get<int64_t>("original_max_position_embeddings", 0);
  f.check(s.original_max >= 0, "original_max_position_embeddings", s.original_max, "must be > 0");
  s.attention_factor = f.get<double>("attention_factor", 0.0);
  f.check(s.attention_factor >= 0, "attention_factor", s.attention_factor, "must be > 0");
  s.n_hat = f.get<int64_t>("n_hat", 0);
  f.check(s.n_hat >= 0, "n_hat", s.n_hat, "must be >= 0");
  if (s.type == "longrope") {
    s.short_factor = f.req<std::vector<double>>("short_factor");
    s.long_factor = f.req<std::vector<double>>("long_factor");
    f.check(s.short_factor.size() == s.long_factor.size(), "long_factor", s.long_factor.size(),
            "must have as many values as short_factor (" + std::to_string(s.short_factor.size()) + ")");
    for (double v : s.short_factor) f.check(v > 0, "short_factor", v, "values must be > 0");
    for (double v : s.long_factor) f.check(v > 0, "long_factor", v, "values must be > 0");
    f.check(s.original_max > 0, "original_max_position_embeddings", s.original_max, "is required for longrope");
    s.factor = f.get<double>("factor", 0.0);
    if (s.factor == 0) {
      f.check(s.max_position > 0, "factor", "(missing)",
              "is required when model.max_position_embeddings is not set");
      s.factor = double(s.max_position) / double(s.original_max);
    }
  } else {
    s.factor = f.req<double>("factor");
  }
  f.check(s.factor > 0, "factor", s.factor, "must be > 0");
  if (s.type == "dynamic" || s.type == "yarn") {
    if (s.original_max == 0) s.original_max = s.max_position;
    f.check(s.original_max > 0, "original_max_position_embeddings", "(missing)",
            "is required (or set model.max_position_embeddings)");
  }
  if (s.type == "llama3") {
    f.check(s.original_max > 0, "original_max_position_embeddings", s.original_max, "is required for llama3");
    s.low_freq_factor = f.req<double>("low_freq_factor");
    s.high_freq_factor = f.req<double>("high_freq_factor");
    f.check(s.high_freq_factor > s.low_freq_factor && s.low_freq_factor > 0, "high_freq_factor", s.high_freq_factor,
            "must exceed low_freq_factor > 0");
  }
  if (s.type == "yarn") {
    s.beta_fast = f.get<double>("beta_fast", s.beta_fast);
    s.beta_slow = f.get<double>("beta_slow", s.beta_slow);
    f.check(s.beta_fast > s.beta_slow && s.beta_slow > 0, "beta_fast", s.beta_fast, "must exceed beta_slow > 0");
    s.mscale = f.get<double>("mscale", 0.0);
    s.mscale_all_dim = f.get<double>("mscale_all_dim", 0.0);
    s.truncate = f.get<bool>("truncate", true);
  }
  f.done();
  return s;
}

nlohmann::json RopeScaling::to_json() const {
  if (!active()) return nullptr;
  nlohmann::json j;
  j["rope_type"] = type;
  j["factor"] = factor;
  if (original_max > 0) j["original_max_position_embeddings"] = original_max;
  if (attention_factor > 0) j["attention_factor"] = attention_factor;
  if (n_hat > 0) j["n_hat"] = n_hat;
  if (type == "yarn") {
    j["beta_fast"] = beta_fast;
    j["beta_slow"] = beta_slow;
    if (mscale > 0) j["mscale"] = mscale;
    if (mscale_all_dim > 0) j["mscale_all_dim"] = mscale_all_dim;
    if (!truncate) j["truncate"] = false;
  }
  if (type == "llama3") {
    j["low_freq_factor"] = low_freq_factor;
    j["high_freq_factor"] = high_freq_factor;
  }
  if (type == "longrope") {
    j["short_factor"] = short_factor;
    j["long_factor"] = long_factor;
  }
  return j;
}

RopeScaling::Plan RopeScaling::plan(int64_t dim, double base, int64_t len) const {
  const int64_t h = dim / 2;
  auto i = torch::arange(0, h, torch::kFloat64);
  Plan p;
  p.lambda = torch::ones({h}, torch::kFloat64);
  if (type.empty()) return p;
  if (type == "linear") {
    p.lambda.fill_(factor);
  } else if (type == "dynamic") {
    if (len > original_max) {
      double b = base * std::pow(factor * double(len) / double(original_max) - (factor - 1), double(dim) / (dim - 2));
      p.lambda = torch::pow(b / base, 2.0 * i / double(dim));
    }
  } else if (type == "yarn") {
    auto inv_extra = torch::pow(base, -2.0 * i / double(dim));
    auto inv_inter = inv_extra / factor;
    double lo = correction_dim(beta_fast, dim, base, original_max);
    double hi = correction_dim(beta_slow, dim, base, original_max);
    if (truncate) {
      lo = std::floor(lo);
      hi = std::ceil(hi);
    }
    lo = std::max(lo, 0.0);
    hi = std::min(hi, double(dim - 1));
    if (lo == hi) hi += 0.001;  // no division by zero
    auto ramp = ((i - lo) / (hi - lo)).clamp(0, 1);
    auto extra = 1 - ramp;  // 1: extrapolate (keep theta), 0: interpolate (theta / factor)
    auto inv = inv_inter * (1 - extra) + inv_extra * extra;
    p.lambda = inv_extra / inv;
    p.attention = attention_factor > 0 ? attention_factor
                  : (mscale > 0 && mscale_all_dim > 0)
                      ? yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
                      : yarn_mscale(factor, 1.0);
  } else if (type == "llama3") {
    // Llama 3.1: wavelengths shorter than L / high_freq_factor keep theta, longer than
    // L / low_freq_factor are divided by factor, and in between a smooth mix of the two.
    const double pi = 3.14159265358979323846;
    auto inv = torch::pow(base, -2.0 * i / double(dim));
    auto wavelen = 2 * pi / inv;
    const double lo_wavelen = double(original_max) / low_freq_factor, hi_wavelen = double(original_max) / high_freq_factor;
    auto smooth = (double(original_max) / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
    auto medium = 1.0 / ((1 - smooth) / factor + smooth);
    p.lambda = torch::where(wavelen < hi_wavelen, torch::ones_like(inv),
                            torch::where(wavelen > lo_wavelen, torch::full_like(inv, factor), medium));
  } else if (type == "longrope") {
    LCX_CHECK(int64_t(long_factor.size()) == h, "rope_scaling: longrope has ", long_factor.size(),
              " factors for a head dim of ", dim, " (needs ", h, ")");
    const auto& f = len > original_max ? long_factor : short_factor;
    p.lambda = torch::tensor(f, torch::kFloat64);
    p.attention = attention_factor > 0 ? attention_factor
                  : factor <= 1       ? 1.0
                                      : std::sqrt(1 + std::log(factor) / std::log(double(original_max)));
  }
  return p;
}

}  // namespace longctx
