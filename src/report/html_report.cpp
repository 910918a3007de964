#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

#include "baq/error.hpp"
#include "baq/json.hpp"
#include "baq/report.hpp"

namespace baq {

namespace {

using json = nlohmann::json;

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// Viridis-like ramp: t in [0, 1] -> "#rrggbb".
std::string color(double t) {
  static const double stops[5][3] = {{68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
  t = std::clamp(t, 0.0, 1.0) * 4.0;
  const int i = std::min(3, static_cast<int>(t));
  const double f = t - i;
  int rgb[3];
  for (int k = 0; k < 3; ++k) rgb[k] = static_cast<int>(std::lround(stops[i][k] + f * (stops[i + 1][k] - stops[i][k])));
  return fmt::format("#{:02x}{:02x}{:02x}", rgb[0], rgb[1], rgb[2]);
}

// Per-column code bits of a layer: BAQ's levels, else the uniform width.
std::vector<double> column_bits(const json& run, const json& layer) {
  std::vector<double> bits;
  if (layer.contains("levels"))
    for (const auto& L : layer["levels"]) bits.push_back(std::log2(L.get<double>()));
  else
    bits.assign(layer["cols"].get<size_t>(), run["settings"].value("bits", 0.0));
  return bits;
}

// `max_bits` is shared by every run's map so that one color means one width everywhere.
std::string heat_map(const json& run, const std::string& name, double max_bits) {
  const auto& layers = run["layers"];
  constexpr int kWidth = 760, kLabel = 150, kRow = 8, kBins = 256;
  const int height = static_cast<int>(layers.size()) * kRow + 40;
  std::string svg = fmt::format(R"(<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="9">)",
                                kLabel + kWidth + 70, height);
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto bits = column_bits(run, layers[i]);
    const int y = static_cast<int>(i) * kRow;
    svg += fmt::format(R"(<text x="{}" y="{}" text-anchor="end">{}</text>)", kLabel - 4, y + kRow - 1,
                       escape(layers[i]["name"].get<std::string>()));
    // Columns averaged into at most kBins cells so wide layers stay light.
    const size_t n = bits.size(), bins = std::min<size_t>(n, kBins);
    for (size_t b = 0; b < bins; ++b) {
      const size_t c0 = b * n / bins, c1 = (b + 1) * n / bins;
      double mean = 0;
      for (size_t c = c0; c < c1; ++c) mean += bits[c] / static_cast<double>(c1 - c0);
      const double x0 = kLabel + static_cast<double>(kWidth) * c0 / n, x1 = kLabel + static_cast<double>(kWidth) * c1 / n;
      svg += fmt::format(R"(<rect x="{:.2f}" y="{}" width="{:.2f}" height="{}" fill="{}"/>)", x0, y, x1 - x0 + 0.05,
                         kRow - 1, color(mean / max_bits));
    }
  }
  // Legend.
  const int ly = static_cast<int>(layers.size()) * kRow + 10;
  for (int k = 0; k <= 20; ++k)
    svg += fmt::format(R"(<rect x="{}" y="{}" width="12" height="10" fill="{}"/>)", kLabel + k * 12, ly, color(k / 20.0));
  svg += fmt::format(R"(<text x="{}" y="{}">0 bits</text><text x="{}" y="{}">{:.2f} bits per column ({})</text>)",
                     kLabel, ly + 22, kLabel + 200, ly + 22, max_bits, escape(name));
  return svg + "</svg>";
}

// A line chart with a log-scale y axis: one polyline per series over layer index.
std::string loss_chart(const json& run) {
  const auto& layers = run["layers"];
  const bool baq = run["method"] == "baq";
  constexpr int kW = 860, kH = 260, kL = 60, kB = 30;
  std::vector<std::pair<std::string, std::vector<double>>> series;
  std::vector<double> after, before;
  for (const auto& l : layers) {
    after.push_back(l.value("gptq_loss", 0.0));
    if (baq) before.push_back(l.value("gptq_loss_uniform", 0.0));
  }
  if (baq) series.emplace_back("GPTQ (uniform measurement pass)", before);
  series.emplace_back(baq ? "BAQ (allocated)" : fmt::format("{}", run["method"].get<std::string>()), after);
  double lo = 1e300, hi = 1e-300;
  for (const auto& [n, v] : series)
    for (double x : v)
      if (x > 0) lo = std::min(lo, x), hi = std::max(hi, x);
  if (lo > hi) return "<p>No GPTQ losses in this run (RTN).</p>";
  const double l0 = std::floor(std::log10(lo)), l1 = std::max(l0 + 1, std::ceil(std::log10(hi)));
  auto px = [&](size_t i) { return kL + (layers.size() > 1 ? (kW - kL - 20) * static_cast<double>(i) / (layers.size() - 1) : 0); };
  auto py = [&](double v) { return kH - kB - (kH - kB - 10) * (std::log10(std::max(v, lo)) - l0) / (l1 - l0); };
  std::string svg = fmt::format(R"(<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="10">)", kW, kH + 20);
  for (double e = l0; e <= l1; e += 1)
    svg += fmt::format(R"(<line x1="{}" x2="{}" y1="{:.1f}" y2="{:.1f}" stroke="#ddd"/><text x="{}" y="{:.1f}" text-anchor="end">1e{}</text>)",
                       kL, kW - 20, py(std::pow(10, e)), py(std::pow(10, e)), kL - 4, py(std::pow(10, e)) + 3, e);
  const char* colors[] = {"#d62728", "#1f77b4"};
  for (size_t s = 0; s < series.size(); ++s) {
    std::string pts;
    for (size_t i = 0; i < series[s].second.size(); ++i) pts += fmt::format("{:.1f},{:.1f} ", px(i), py(series[s].second[i]));
    svg += fmt::format(R"(<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>)", colors[s % 2], pts);
    svg += fmt::format(R"(<text x="{}" y="{}" fill="{}">{}</text>)", kL + 10 + 260 * s, kH + 12, colors[s % 2],
                       escape(series[s].first));
  }
  svg += fmt::format(R"(<text x="{}" y="{}">layer (sequential order), GPTQ loss Σℓ_j, log scale</text>)", kL, kH - 8);
  return svg + "</svg>";
}

// BAQ: each layer's predicted loss ratio (the loss model's geomean/mean) against the measured one
// (GPTQ's loss after allocation over the uniform pass's); the diagonal is a perfect model, points
// above it are layers where the allocation gained less than it promised.
std::string prediction_chart(const json& run) {
  std::vector<std::pair<double, double>> pts;
  for (const auto& l : run["layers"])
    if (l.contains("predicted_loss_ratio") && l.contains("measured_loss_ratio") && !l.value("kept_uniform", false))
      pts.emplace_back(l["predicted_loss_ratio"].get<double>(), l["measured_loss_ratio"].get<double>());
  if (pts.empty()) return "<p>No BAQ allocation in this run.</p>";
  constexpr int kS = 320, kM = 50;
  double hi = 1.0;
  for (const auto& [p, m] : pts) hi = std::max({hi, p, m});
  hi = std::ceil(hi * 10) / 10;
  auto at = [&](double v) { return kM + (kS - kM - 10) * std::clamp(v, 0.0, hi) / hi; };
  std::string svg = fmt::format(R"(<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="10">)", kS, kS);
  svg += fmt::format(R"(<line x1="{}" y1="{}" x2="{:.1f}" y2="{:.1f}" stroke="#bbb" stroke-dasharray="4"/>)", kM, kS - kM, at(hi), kS - at(hi));
  svg += fmt::format(R"(<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#000"/><line x1="{}" x2="{}" y1="10" y2="{}" stroke="#000"/>)", kM,
                     kS - 10, kS - kM, kS - kM, kM, kM, kS - kM);
  for (const auto& [p, m] : pts)
    svg += fmt::format(R"(<circle cx="{:.1f}" cy="{:.1f}" r="3" fill="#1f77b4" fill-opacity="0.7"/>)", at(p), kS - at(m));
  svg += fmt::format(R"(<text x="{}" y="{}">predicted loss ratio (0 … {:g})</text>)", kM, kS - kM + 24, hi);
  svg += fmt::format(R"svg(<text x="12" y="{}" transform="rotate(-90 12 {})">measured loss ratio</text>)svg", kS / 2 + 40, kS / 2 + 40);
  return svg + "</svg>";
}

std::string ppl_chart(const std::vector<json>& runs, const std::vector<std::string>& names) {
  struct Point {
    double bpw, ppl;
    std::string label;
  };
  std::vector<Point> pts;
  for (size_t i = 0; i < runs.size(); ++i)
    if (runs[i].contains("evaluation"))
      pts.push_back({runs[i]["totals"]["bits_per_weight"].get<double>(), runs[i]["evaluation"]["ppl"].get<double>(), names[i]});
  if (pts.empty()) return "<p>No run was evaluated (<code>baq quantize --eval FILE</code> records perplexity).</p>";
  constexpr int kW = 640, kH = 320, kL = 60, kB = 40;
  double x0 = 1e9, x1 = -1e9, y0 = 1e300, y1 = 0;
  for (const auto& p : pts) x0 = std::min(x0, p.bpw), x1 = std::max(x1, p.bpw), y0 = std::min(y0, p.ppl), y1 = std::max(y1, p.ppl);
  x0 = std::floor(x0 - 0.25), x1 = std::ceil(x1 + 0.25);
  const double ly0 = std::log10(y0) - 0.05, ly1 = std::log10(y1) + 0.05;
  auto px = [&](double v) { return kL + (kW - kL - 20) * (v - x0) / (x1 - x0); };
  auto py = [&](double v) { return kH - kB - (kH - kB - 10) * (std::log10(v) - ly0) / (ly1 - ly0); };
  std::string svg = fmt::format(R"(<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="10">)", kW, kH);
  svg += fmt::format(R"(<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#000"/><line x1="{}" x2="{}" y1="10" y2="{}" stroke="#000"/>)",
                     kL, kW - 20, kH - kB, kH - kB, kL, kL, kH - kB);
  for (double x = x0; x <= x1; x += 0.5)
    svg += fmt::format(R"(<text x="{:.1f}" y="{}" text-anchor="middle">{}</text>)", px(x), kH - kB + 14, x);
  svg += fmt::format(R"(<text x="{}" y="{}">bits per weight (everything stored)</text>)", kW / 2 - 80, kH - 6);
  svg += fmt::format(R"(<text x="4" y="{:.1f}">{:.3g}</text><text x="4" y="{:.1f}">{:.3g}</text>)", py(y0) + 3, y0, py(y1) + 3, y1);
  for (const auto& p : pts)
    svg += fmt::format(R"(<circle cx="{:.1f}" cy="{:.1f}" r="4" fill="#1f77b4"/><text x="{:.1f}" y="{:.1f}">{} ({:.3f})</text>)",
                       px(p.bpw), py(p.ppl), px(p.bpw) + 6, py(p.ppl) - 4, escape(p.label), p.ppl);
  return svg + "</svg>";
}

}  // namespace

// Every field the page reads, checked before any is used: a report is an input like any other.
void validate_run_report(const json& r, const std::string& name) {
  if (!r.is_object()) fail("{}: not a baq run report (not a JSON object)", name);
  const std::string method = json_string(r, "method", name);
  if (method != "rtn" && method != "gptq" && method != "baq") fail("{}: field 'method' is '{}', not rtn, gptq or baq", name, method);
  const json& settings = json_field(r, "settings", name);
  if (!settings.is_object()) fail("{}: field 'settings' is not an object", name);
  json_number_or(settings, "bits", name + ": settings", 0.0);
  json_number_or(settings, "rate", name + ": settings", 0.0);
  json_string_or(settings, "allocation", name + ": settings", "");
  const json& totals = json_field(r, "totals", name);
  json_number(totals, "bits_per_weight", name + ": totals");
  json_number_or(totals, "code_bits_per_weight", name + ": totals", 0.0);
  const json& layers = json_field(r, "layers", name);
  if (!layers.is_array() || layers.size() > 1000000) fail("{}: field 'layers' is not a list of layers", name);
  for (size_t i = 0; i < layers.size(); ++i) {
    const json& l = layers[i];
    const std::string what = fmt::format("{}: layer {}", name, i);
    json_string(l, "name", what);
    const int64_t cols = json_int(l, "cols", what, 1, int64_t{1} << 24);
    json_number_or(l, "gptq_loss", what, 0.0);
    json_number_or(l, "gptq_loss_uniform", what, 0.0);
    json_number_or(l, "predicted_loss_ratio", what, 0.0);
    json_number_or(l, "measured_loss_ratio", what, 0.0);
    if (l.contains("kept_uniform") && !l["kept_uniform"].is_boolean()) fail("{}: field 'kept_uniform' must be true or false", what);
    if (l.contains("levels")) {
      const json& levels = l["levels"];
      if (!levels.is_array() || static_cast<int64_t>(levels.size()) != cols)
        fail("{}: field 'levels' must list one level count per column ({})", what, cols);
      for (const auto& L : levels) json_as_int(L, what + ": a level count", 1, 65536);
    }
  }
  if (r.contains("evaluation")) {
    json_number(r["evaluation"], "ppl", name + ": evaluation");
    json_number_or(r["evaluation"], "kld_mean", name + ": evaluation", 0.0);
  }
}

std::string html_report(const std::vector<std::string>& report_json, const std::vector<std::string>& names) {
  if (report_json.empty()) fail("no run reports given");
  std::vector<json> runs;
  for (size_t i = 0; i < report_json.size(); ++i) {
    runs.push_back(parse_json(report_json[i], names[i]));
    validate_run_report(runs.back(), names[i]);
  }
  std::string html = R"(<!DOCTYPE html><html><head><meta charset="utf-8"><title>baq report</title>
<style>body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}h2{margin-top:28px}</style>
</head><body><h1>baq quantization report</h1>
<table><tr><th>run</th><th>method</th><th>budget</th><th>bits/weight</th><th>code bits/weight</th><th>layers</th><th>ppl</th><th>KLD</th></tr>)";
  for (size_t i = 0; i < runs.size(); ++i) {
    const json& r = runs[i];
    const json& s = r.value("settings", json::object());
    // A stored budget (--bpw) when given, else the code bits; BAQ's allocation, and what the
    // model-wide check chose.
    std::string budget = s.contains("stored_bits_per_weight") ? fmt::format("{} stored", s.value("stored_bits_per_weight", 0.0))
                         : r["method"] == "baq"               ? fmt::format("{}", s.value("rate", 0.0))
                                                              : fmt::format("{}", s.value("bits", 0));
    if (r["method"] == "baq") budget += fmt::format(" ({})", s.value("allocation", ""));
    if (r.contains("allocation_check") && r["allocation_check"].is_object()) {
      const json& c = r["allocation_check"];
      budget += ", checked: KLD";
      for (const auto& [key, label] : {std::pair{"model_wide_kld", "model-wide"}, std::pair{"per_layer_kld", "per layer"},
                                       std::pair{"uniform_gptq_kld", "uniform GPTQ"}})
        if (c.contains(key)) budget += fmt::format(" {} {:.4g}", label, c.value(key, 0.0));
      budget += fmt::format(" → {}", c.value("chosen", std::string("?")));
    }
    const bool ev = r.contains("evaluation");
    html += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.4f}</td><td>{:.4f}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        escape(names[i]), escape(r["method"].get<std::string>()), escape(budget),
                        r["totals"].value("bits_per_weight", 0.0), r["totals"].value("code_bits_per_weight", 0.0),
                        r["layers"].size(), ev ? fmt::format("{:.4f}", r["evaluation"].value("ppl", 0.0)) : "–",
                        ev ? fmt::format("{:.5f}", r["evaluation"].value("kld_mean", 0.0)) : "–");
  }
  html += "</table>";
  html += "<h2>Bits per column</h2><p>Each row is a layer, left to right its input columns (averaged in bins on wide layers).</p>";
  double max_bits = 1.0;
  for (const json& r : runs)
    for (const auto& l : r["layers"])
      for (double b : column_bits(r, l)) max_bits = std::max(max_bits, b);
  for (size_t i = 0; i < runs.size(); ++i) html += heat_map(runs[i], names[i], max_bits);
  html += "<h2>Loss per layer</h2>";
  for (size_t i = 0; i < runs.size(); ++i) html += fmt::format("<h3>{}</h3>{}", escape(names[i]), loss_chart(runs[i]));
  html += "<h2>Predicted against measured loss (BAQ)</h2><p>Per layer: the loss model's ratio of allocated to uniform loss "
          "against GPTQ's measured one; layers that kept uniform bits are left out.</p>";
  for (size_t i = 0; i < runs.size(); ++i)
    if (runs[i]["method"] == "baq") html += fmt::format("<h3>{}</h3>{}", escape(names[i]), prediction_chart(runs[i]));
  html += "<h2>Perplexity against bits per weight</h2>" + ppl_chart(runs, names);
  return html + "</body></html>\n";
}

}  // namespace baq
