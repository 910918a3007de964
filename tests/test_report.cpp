// The run report: JSON fields and exact accounting, and the HTML page (structure, and a real render
// in headless Chromium when it is installed).
#include <gtest/gtest.h>

#include <cmath>

#include <cstdlib>
#include <filesystem>

#include "baq/calibrate.hpp"
#include "baq/error.hpp"
#include "baq/report.hpp"
#include "test_util.hpp"

namespace baq::test {
namespace {

struct Runs {
  std::string gptq, baq;
};

Runs tiny_runs() {
  const ModelConfig c = small_llama(16, 24, 2, 2, 1, 29, 16, true);
  TempDir dir;
  random_hf_model(c, 41, dir.path());
  std::vector<int> tokens(300);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int>((i * 11 + i / 5) % c.vocab_size);
  const auto calib = sample_calibration_windows(tokens, 8, 16, 3);
  Runs out;
  for (auto method : {QuantMethod::Gptq, QuantMethod::Baq}) {
    LoadedModel m = load_model(dir.path().string(), "", false);
    QuantizeOptions o;
    o.method = method;
    o.settings.bits = 3;
    o.rate = 2.5;
    const QuantizeRun run = quantize_model(*m.model, calib, 16, o);
    RunContext ctx;
    ctx.model = "tiny";
    ctx.evaluated = true;
    ctx.ppl = method == QuantMethod::Gptq ? 12.5 : 11.25;
    (method == QuantMethod::Gptq ? out.gptq : out.baq) = quantize_report_json(run, o, ctx);
  }
  return out;
}

TEST(Report, JsonCarriesAllocationAndExactAccounting) {
  const Runs runs = tiny_runs();
  const auto j = nlohmann::json::parse(runs.baq);
  EXPECT_EQ(j["method"], "baq");
  EXPECT_EQ(j["settings"]["rate"], 2.5);
  ASSERT_EQ(j["layers"].size(), 14u);
  double bits = 0, weights = 0;
  for (const auto& l : j["layers"]) {
    const auto& s = l["storage_bits"];
    bits += s["codes"].get<double>() + s["ranges"].get<double>() + s["widths"].get<double>() + s["means"].get<double>();
    weights += l["rows"].get<double>() * l["cols"].get<double>();
    EXPECT_EQ(l["levels"].size(), l["cols"].get<size_t>());
    int hist = 0;
    for (const auto& [k, v] : l["levels_histogram"].items()) hist += v.get<int>();
    EXPECT_EQ(hist, l["cols"].get<int>());
    EXPECT_TRUE(l.contains("predicted_loss_ratio"));
    EXPECT_TRUE(l.contains("gptq_loss_uniform"));
    // The measured ratio is GPTQ's allocated loss over the uniform pass's moved to the budget (at
    // 2.5 bits the pass measures round(2^2.5) = 6 levels: 2^(−2(2.5 − log2 6)) scales it).
    const double uniform_at_budget = l["gptq_loss_uniform"].get<double>() * std::exp2(-2.0 * (2.5 - std::log2(6.0)));
    EXPECT_NEAR(l["measured_loss_ratio"].get<double>(), l["gptq_loss"].get<double>() / uniform_at_budget,
                1e-9 * l["measured_loss_ratio"].get<double>());
  }
  EXPECT_NEAR(j["totals"]["bits_per_weight"].get<double>(), bits / weights, 1e-12);
  EXPECT_EQ(j["evaluation"]["ppl"], 11.25);
}

TEST(Report, HtmlIsSelfContainedWithEveryPlot) {
  const Runs runs = tiny_runs();
  const std::string html = html_report({runs.gptq, runs.baq}, {"gptq-3", "baq-2.5"});
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("http://"), html.find("http://www.w3.org"));  // only the SVG namespace
  size_t svgs = 0;
  for (size_t p = html.find("<svg"); p != std::string::npos; p = html.find("<svg", p + 1)) ++svgs;
  EXPECT_EQ(svgs, 2u /*heat maps*/ + 2u /*loss charts*/ + 1u /*BAQ predicted vs measured*/ + 1u /*ppl vs bpw*/);
  EXPECT_NE(html.find("Predicted against measured loss"), std::string::npos);
  EXPECT_NE(html.find("blocks.1.mlp.down"), std::string::npos);
  EXPECT_NE(html.find("baq-2.5 (11.250)"), std::string::npos);  // the evaluated point is plotted
  EXPECT_NE(html.find("GPTQ (uniform measurement pass)"), std::string::npos);
  EXPECT_THROW(html_report({"{\"x\": 1}"}, {"bad"}), Error);
  EXPECT_THROW(html_report({"{"}, {"bad"}), Error);
}

TEST(Report, RendersInHeadlessChromium) {
  const char* candidates[] = {"/usr/bin/chromium", "/usr/bin/chromium-browser"};
  std::string chromium;
  for (const char* c : candidates)
    if (std::filesystem::exists(c)) chromium = c;
  if (chromium.empty()) GTEST_SKIP() << "chromium is not installed (scripts/install-deps.sh installs it)";
  const Runs runs = tiny_runs();
  TempDir dir;
  write_bytes(dir.file("report.html"), html_report({runs.gptq, runs.baq}, {"gptq-3", "baq-2.5"}));
  const auto r = run_command(chromium + " --headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
                             "--disable-background-networking --disable-component-update --disable-sync "
                             "--user-data-dir=" + dir.file("profile") + " --window-size=1100,1400 --screenshot=" +
                             dir.file("shot.png") + " file://" + dir.file("report.html"));
  ASSERT_TRUE(std::filesystem::exists(dir.file("shot.png"))) << r.output;
  const std::string png = read_bytes(dir.file("shot.png"));
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_GT(png.size(), 20000u);  // a blank page compresses to a few KB; plots do not
}

}  // namespace
}  // namespace baq::test
