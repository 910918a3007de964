#include <nlohmann/json.hpp>

#include "baq/error.hpp"
#include "baq/io.hpp"

namespace baq {

std::string read_binary_file(const std::string& path) {
  MappedFile f(path);
  return std::string(reinterpret_cast<const char*>(f.data()), f.size());
}

std::string read_text_file(const std::string& path) {
  MappedFile f(path);
  std::string text(reinterpret_cast<const char*>(f.data()), f.size());
  if (path.ends_with(".jsonl")) {
    std::string joined;
    size_t line_no = 0, pos = 0;
    while (pos < text.size()) {
      size_t eol = text.find('\n', pos);
      if (eol == std::string::npos) eol = text.size();
      const std::string_view line(text.data() + pos, eol - pos);
      pos = eol + 1;
      ++line_no;
      if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception&) {
        fail("{}: line {} is not valid JSON", path, line_no);
      }
      if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
        fail("{}: line {} has no string field \"text\"", path, line_no);
      if (!joined.empty()) joined += "\n\n";
      joined += j["text"].get<std::string>();
    }
    text = std::move(joined);
  }
  if (text.empty()) fail("{}: empty text", path);
  return text;
}

}  // namespace baq
