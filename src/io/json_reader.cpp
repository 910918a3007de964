#include "baq/json.hpp"

#include <cmath>
#include <set>
#include <vector>

#include "baq/error.hpp"
#include "baq/io.hpp"

namespace baq {

namespace {

// The deepest nesting of `text`, counted over brackets outside strings, stopping once past `limit`:
// nothing of a hostile document is built before its depth is known.
int nesting_depth(std::string_view text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '{' || c == '[') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) return deepest;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return deepest;
}

std::string type_name(const nlohmann::json& v) {
  return v.is_null() ? "null" : v.type_name();
}

[[noreturn]] void wrong(const std::string& what, const std::string& key, const char* expected, const nlohmann::json& v) {
  fail("{}: field '{}' must be {}, not {}", what, key, expected, type_name(v));
}

}  // namespace

nlohmann::json parse_json(std::string_view text, const std::string& source) {
  if (nesting_depth(text, kMaxJsonDepth) > kMaxJsonDepth) fail("{}: JSON nests deeper than {} levels", source, kMaxJsonDepth);
  std::vector<std::set<std::string>> keys;  // one set per open object, to refuse duplicate keys
  std::string duplicate;
  const nlohmann::json::parser_callback_t check = [&](int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    switch (event) {
      case nlohmann::json::parse_event_t::object_start: keys.emplace_back(); break;
      case nlohmann::json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case nlohmann::json::parse_event_t::key:
        if (!keys.empty() && !keys.back().insert(parsed.get<std::string>()).second && duplicate.empty())
          duplicate = parsed.get<std::string>();
        break;
      default: break;
    }
    return true;
  };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.begin(), text.end(), check);
  } catch (const nlohmann::json::exception& e) {
    std::string why = e.what();
    if (const size_t at = why.find("] "); why.starts_with("[json.exception") && at != std::string::npos) why = why.substr(at + 2);
    fail("{}: not valid JSON ({})", source, why);
  }
  if (!duplicate.empty()) fail("{}: duplicate key '{}' in a JSON object", source, duplicate);
  return j;
}

nlohmann::json read_json_file(const std::string& path) {
  MappedFile f(path);
  return parse_json(std::string_view(reinterpret_cast<const char*>(f.data()), f.size()), path);
}

const nlohmann::json& json_field(const nlohmann::json& j, const std::string& key, const std::string& what) {
  if (!j.is_object()) fail("{}: expected a JSON object holding '{}', found {}", what, key, type_name(j));
  const auto it = j.find(key);
  if (it == j.end()) fail("{}: missing field '{}'", what, key);
  return *it;
}

int64_t json_as_int(const nlohmann::json& v, const std::string& what, int64_t lo, int64_t hi) {
  int64_t x = 0;
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) fail("{}: {} is outside {}..{}", what, u, lo, hi);
    x = static_cast<int64_t>(u);
  } else if (v.is_number_integer()) {
    x = v.get<int64_t>();
  } else if (v.is_number_float() && std::isfinite(v.get<double>()) && v.get<double>() == std::floor(v.get<double>()) &&
             std::abs(v.get<double>()) < 9e15) {
    x = static_cast<int64_t>(v.get<double>());
  } else {
    fail("{}: must be an integer, not {}", what, v.is_number() ? v.dump() : type_name(v));
  }
  if (x < lo || x > hi) fail("{}: {} is outside {}..{}", what, x, lo, hi);
  return x;
}

std::string json_as_string(const nlohmann::json& v, const std::string& what) {
  if (!v.is_string()) fail("{}: must be a string, not {}", what, type_name(v));
  return v.get<std::string>();
}

int64_t json_int(const nlohmann::json& j, const std::string& key, const std::string& what, int64_t lo, int64_t hi) {
  return json_as_int(json_field(j, key, what), fmt::format("{}: field '{}'", what, key), lo, hi);
}

double json_number(const nlohmann::json& j, const std::string& key, const std::string& what) {
  const nlohmann::json& v = json_field(j, key, what);
  if (!v.is_number()) wrong(what, key, "a number", v);
  const double x = v.get<double>();
  if (!std::isfinite(x)) fail("{}: field '{}' is not finite", what, key);
  return x;
}

bool json_bool(const nlohmann::json& j, const std::string& key, const std::string& what) {
  const nlohmann::json& v = json_field(j, key, what);
  if (!v.is_boolean()) wrong(what, key, "true or false", v);
  return v.get<bool>();
}

std::string json_string(const nlohmann::json& j, const std::string& key, const std::string& what) {
  const nlohmann::json& v = json_field(j, key, what);
  if (!v.is_string()) wrong(what, key, "a string", v);
  return v.get<std::string>();
}

namespace {
bool absent(const nlohmann::json& j, const std::string& key) {
  if (!j.is_object()) return true;
  const auto it = j.find(key);
  return it == j.end() || it->is_null();
}
}  // namespace

int64_t json_int_or(const nlohmann::json& j, const std::string& key, const std::string& what, int64_t lo, int64_t hi,
                    int64_t fallback) {
  return absent(j, key) ? fallback : json_int(j, key, what, lo, hi);
}

double json_number_or(const nlohmann::json& j, const std::string& key, const std::string& what, double fallback) {
  return absent(j, key) ? fallback : json_number(j, key, what);
}

bool json_bool_or(const nlohmann::json& j, const std::string& key, const std::string& what, bool fallback) {
  return absent(j, key) ? fallback : json_bool(j, key, what);
}

std::string json_string_or(const nlohmann::json& j, const std::string& key, const std::string& what,
                           const std::string& fallback) {
  return absent(j, key) ? fallback : json_string(j, key, what);
}

}  // namespace baq
