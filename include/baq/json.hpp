#pragma once
// The one JSON reader every input goes through (config.json, tokenizer files, .baq headers, reports,
// safetensors headers): nesting bounded before anything is built, duplicate keys refused, and typed
// field access whose errors name the file and the field instead of nlohmann's exception text.
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace baq {

inline constexpr int kMaxJsonDepth = 64;

// Parses `text`; `source` names it in errors ("FILE: not valid JSON (...)", "FILE: JSON nests deeper
// than 64 levels", "FILE: duplicate key 'k' in a JSON object").
nlohmann::json parse_json(std::string_view text, const std::string& source);
nlohmann::json read_json_file(const std::string& path);

// Field access: `what` names the object in errors (a file, or "FILE: record 'x'"). A missing field or
// a value of the wrong type or outside [lo, hi] is an error naming `what` and `key`.
const nlohmann::json& json_field(const nlohmann::json& j, const std::string& key, const std::string& what);
int64_t json_int(const nlohmann::json& j, const std::string& key, const std::string& what, int64_t lo, int64_t hi);
double json_number(const nlohmann::json& j, const std::string& key, const std::string& what);
bool json_bool(const nlohmann::json& j, const std::string& key, const std::string& what);
std::string json_string(const nlohmann::json& j, const std::string& key, const std::string& what);
// The same with a default when the key is absent (or null).
int64_t json_int_or(const nlohmann::json& j, const std::string& key, const std::string& what, int64_t lo, int64_t hi,
                    int64_t fallback);
double json_number_or(const nlohmann::json& j, const std::string& key, const std::string& what, double fallback);
bool json_bool_or(const nlohmann::json& j, const std::string& key, const std::string& what, bool fallback);
std::string json_string_or(const nlohmann::json& j, const std::string& key, const std::string& what,
                           const std::string& fallback);
// A value's own checks (array items): `what` names it whole.
int64_t json_as_int(const nlohmann::json& v, const std::string& what, int64_t lo, int64_t hi);
std::string json_as_string(const nlohmann::json& v, const std::string& what);

}  // namespace baq
