#include <filesystem>

#include <fmt/format.h>

#include "baq/error.hpp"
#include "baq/io.hpp"
#include "baq/report.hpp"
#include "commands.hpp"

namespace baq::cli {

Command add_report_command(CLI::App& app) {
  auto* sub = app.add_subcommand("report", "Render run reports (report.json) as one self-contained HTML page");
  auto runs = std::make_shared<std::vector<std::string>>();
  auto html = std::make_shared<std::string>();
  sub->add_option("RUN", *runs, "report.json files, or output folders of baq quantize holding one")->required();
  sub->add_option("--html", *html, "Output HTML file")->required();
  return {sub, [runs, html] {
            std::vector<std::string> texts, names;
            InputSet inputs;
            for (const std::string& path : *runs) inputs.add(path);
            check_output_file(*html, inputs);
            for (std::string path : *runs) {
              if (std::filesystem::is_directory(path)) path = (std::filesystem::path(path) / "report.json").string();
              MappedFile f(path);
              texts.emplace_back(reinterpret_cast<const char*>(f.data()), f.size());
              const auto p = std::filesystem::path(path);
              validate_run_report(parse_json(texts.back(), path), path);
              names.push_back(p.filename() == "report.json" ? p.parent_path().filename().string() : p.stem().string());
            }
            write_file_atomically(*html, html_report(texts, names));
            fmt::print("wrote {} ({} runs)\n", *html, texts.size());
          }};
}

}  // namespace baq::cli
