#include "baq/error.hpp"
#include "baq/json.hpp"
#include "tokenizer/tokenizer_pipeline.hpp"
#include "tokenizer/tokenizer_readers.hpp"

namespace baq {

namespace {

using nlohmann::json;

std::string type_of(const json& j, const std::string& what) {
  if (!j.is_object()) fail("{} is not an object", what);
  return json_string(j, "type", what);
}

// A `pattern` field: {"String": s} or {"Regex": r}.
void read_pattern(const json& j, const std::string& what, std::string& literal, std::shared_ptr<Pattern>& regex) {
  const json& p = json_field(j, "pattern", what);
  if (p.is_object() && p.contains("Regex")) regex = std::make_shared<Pattern>(json_string(p, "Regex", what), what);
  else if (p.is_object() && p.contains("String")) literal = json_string(p, "String", what);
  else fail("{}: 'pattern' is neither {{\"String\": …}} nor {{\"Regex\": …}}", what);
}

SplitBehavior read_behavior(const json& j, const std::string& what, SplitBehavior fallback) {
  const std::string b = json_string_or(j, "behavior", what, "");
  if (b.empty()) return fallback;
  if (b == "Removed") return SplitBehavior::Removed;
  if (b == "Isolated") return SplitBehavior::Isolated;
  if (b == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (b == "Contiguous") return SplitBehavior::Contiguous;
  fail("{}: split behavior '{}' is not one of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous", what, b);
}

void read_normalizer(const json& j, const std::string& what, std::vector<Normalizer>& out) {
  if (j.is_null()) return;
  const std::string type = type_of(j, what);
  Normalizer n;
  if (type == "Sequence") {
    for (const json& e : json_field(j, "normalizers", what)) read_normalizer(e, what, out);
    return;
  }
  if (type == "NFC") n.kind = Normalizer::Kind::Nfc;
  else if (type == "NFKC") n.kind = Normalizer::Kind::Nfkc;
  else if (type == "NFD") n.kind = Normalizer::Kind::Nfd;
  else if (type == "NFKD") n.kind = Normalizer::Kind::Nfkd;
  else if (type == "Lowercase") n.kind = Normalizer::Kind::Lowercase;
  else if (type == "Prepend") {
    n.kind = Normalizer::Kind::Prepend;
    n.text = json_string(j, "prepend", what + " Prepend");
  } else if (type == "Replace") {
    n.kind = Normalizer::Kind::Replace;
    read_pattern(j, what + " Replace", n.text, n.pattern);
    n.content = json_string(j, "content", what + " Replace");
  } else {
    fail("{}: normalizer '{}' is not supported (NFC, NFKC, NFD, NFKD, Lowercase, Prepend, Replace, Sequence)", what, type);
  }
  out.push_back(std::move(n));
}

void read_pre_tokenizer(const json& j, const std::string& what, std::vector<PreTokenizer>& out) {
  if (j.is_null()) return;
  const std::string type = type_of(j, what);
  PreTokenizer p;
  if (type == "Sequence") {
    for (const json& e : json_field(j, "pretokenizers", what)) read_pre_tokenizer(e, what, out);
    return;
  }
  if (type == "Split") {
    p.kind = PreTokenizer::Kind::Split;
    read_pattern(j, what + " Split", p.literal, p.pattern);
    p.behavior = read_behavior(j, what + " Split", SplitBehavior::Isolated);
    p.invert = json_bool_or(j, "invert", what + " Split", false);
  } else if (type == "Digits") {
    // Rust's char::is_numeric is the Unicode N categories.
    p.kind = PreTokenizer::Kind::Split;
    p.pattern = std::make_shared<Pattern>(R"(\p{N})", what);
    p.behavior = json_bool_or(j, "individual_digits", what + " Digits", false) ? SplitBehavior::Isolated
                                                                                  : SplitBehavior::Contiguous;
  } else if (type == "Punctuation") {
    // ASCII punctuation (symbols included) and the Unicode P categories.
    p.kind = PreTokenizer::Kind::Split;
    p.pattern = std::make_shared<Pattern>(R"([\p{P}!-/:-@\[-`{-~])", what);
    p.behavior = read_behavior(j, what + " Punctuation", SplitBehavior::Isolated);
  } else if (type == "ByteLevel") {
    p.kind = PreTokenizer::Kind::ByteLevel;
    p.add_prefix_space = json_bool_or(j, "add_prefix_space", what + " ByteLevel", false);
    p.use_regex = json_bool_or(j, "use_regex", what + " ByteLevel", true);
  } else if (type == "Metaspace") {
    p.kind = PreTokenizer::Kind::Metaspace;
    p.replacement = json_string_or(j, "replacement", what + " Metaspace", "\xE2\x96\x81");
    if (j.contains("prepend_scheme")) p.prepend = json_string(j, "prepend_scheme", what + " Metaspace");
    else p.prepend = json_bool_or(j, "add_prefix_space", what + " Metaspace", true) ? "always" : "never";
    if (p.prepend != "always" && p.prepend != "first" && p.prepend != "never")
      fail("{}: Metaspace prepend_scheme '{}' is not always, first or never", what, p.prepend);
    p.split = json_bool_or(j, "split", what + " Metaspace", true);
  } else if (type == "WhitespaceSplit") {
    p.kind = PreTokenizer::Kind::WhitespaceSplit;
  } else {
    fail("{}: pre-tokenizer '{}' is not supported (Split, Digits, Punctuation, ByteLevel, Metaspace, WhitespaceSplit, "
         "Sequence)",
         what, type);
  }
  out.push_back(std::move(p));
}

void read_decoder(const json& j, const std::string& what, TokenDecoder& d) {
  if (j.is_null()) return;
  const std::string type = type_of(j, what);
  if (type == "Sequence") {
    for (const json& e : json_field(j, "decoders", what)) read_decoder(e, what, d);
  } else if (type == "ByteLevel") {
    d.byte_level = true;
  } else if (type == "Metaspace") {
    d.space_marker = json_string_or(j, "replacement", what, "\xE2\x96\x81");
    d.strip_leading_space = json_string_or(j, "prepend_scheme", what, "always") != "never" &&
                            json_bool_or(j, "add_prefix_space", what, true);
  } else if (type == "Replace") {
    std::string literal;
    std::shared_ptr<Pattern> regex;
    read_pattern(j, what + " Replace", literal, regex);
    if (regex || json_string(j, "content", what) != " ")
      fail("{}: Replace decoder other than a literal marker -> ' ' is not supported", what);
    d.space_marker = literal;
  } else if (type == "ByteFallback") {
    d.byte_fallback = true;
  } else if (type == "Fuse") {
  } else if (type == "Strip") {
    if (json_string_or(j, "content", what, " ") != " " || json_int_or(j, "stop", what, 0, 1 << 20, 0) != 0 ||
        json_int_or(j, "start", what, 0, 1 << 20, 0) > 1)
      fail("{}: Strip decoder other than one leading space is not supported", what);
    d.strip_leading_space = json_int_or(j, "start", what, 0, 1, 0) == 1;
  } else {
    fail("{}: decoder '{}' is not supported (ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence)", what,
         type);
  }
}

// The BOS a post-processor puts before a single sequence, if any.
void read_post_processor(const json& j, const std::string& what, SpecialTokens& s) {
  if (j.is_null()) return;
  const std::string type = type_of(j, what);
  if (type == "Sequence") {
    for (const json& e : json_field(j, "processors", what)) read_post_processor(e, what, s);
  } else if (type == "TemplateProcessing") {
    const json& single = json_field(j, "single", what);
    if (!single.is_array()) fail("{}: 'single' is not a list", what);
    for (const json& piece : single) {
      if (piece.is_object() && piece.contains("Sequence")) break;  // only what comes before the text
      if (!piece.is_object() || !piece.contains("SpecialToken")) fail("{}: template piece {} not understood", what, piece.dump());
      const std::string name = json_string(json_field(piece, "SpecialToken", what), "id", what);
      const json& specials = json_field(j, "special_tokens", what);
      const json& ids = json_field(json_field(specials, name, what + " special_tokens"), "ids", what);
      if (!ids.is_array() || ids.size() != 1) fail("{}: special token '{}' is not one id", what, name);
      s.bos = static_cast<int>(json_as_int(ids[0], what + " '" + name + "' id", 0, 1 << 24));
      s.add_bos = true;
    }
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    const json& cls = json_field(j, "cls", what);
    if (!cls.is_array() || cls.size() != 2) fail("{}: 'cls' is not [token, id]", what);
    s.bos = static_cast<int>(json_as_int(cls[1], what + " cls id", 0, 1 << 24));
    s.add_bos = true;
  } else if (type != "ByteLevel") {
    fail("{}: post-processor '{}' is not supported (TemplateProcessing, RobertaProcessing, BertProcessing, ByteLevel, "
         "Sequence)",
         what, type);
  }
}

}  // namespace

std::unique_ptr<BpeTokenizer> read_tokenizer_json(const json& j, const std::string& source) {
  if (!j.is_object()) fail("{}: not a JSON object", source);
  auto p = std::make_unique<TokenizerPipeline>();
  p->source = source;
  const json& model = json_field(j, "model", source);
  const std::string what = source + ": model";
  const std::string type = json_string_or(model, "type", what, "BPE");
  if (type != "BPE") fail("{}: tokenizer model '{}' is not supported (BPE)", source, type);
  if (model.contains("dropout") && !model["dropout"].is_null() && json_number(model, "dropout", what) != 0.0)
    fail("{}: BPE dropout is not supported", source);
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (model.contains(key) && !model[key].is_null() && !json_string(model, key, what).empty())
      fail("{}: BPE '{}' is not supported", source, key);
  BpeModel& m = p->model;
  const json& vocab = json_field(model, "vocab", what);
  if (!vocab.is_object()) fail("{}: model.vocab is not an object", source);
  for (const auto& [tok, id] : vocab.items())
    m.vocab.emplace(tok, static_cast<int>(json_as_int(id, what + ".vocab '" + tok + "'", 0, 1 << 24)));
  const json& merges = json_field(model, "merges", what);
  if (!merges.is_array()) fail("{}: model.merges is not a list", source);
  for (const json& e : merges) {
    if (e.is_string()) {
      const std::string s = e.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || space == 0 || space + 1 == s.size()) fail("{}: merge '{}' is not 'A B'", source, s);
      m.add_merge(s.substr(0, space), s.substr(space + 1));
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      m.add_merge(e[0].get<std::string>(), e[1].get<std::string>());
    } else {
      fail("{}: malformed merge {}", source, e.dump());
    }
  }
  m.byte_fallback = json_bool_or(model, "byte_fallback", what, false);
  m.ignore_merges = json_bool_or(model, "ignore_merges", what, false);
  m.fuse_unk = json_bool_or(model, "fuse_unk", what, false);
  const std::string unk = json_string_or(model, "unk_token", what, "");
  if (!unk.empty()) {
    auto it = m.vocab.find(unk);
    if (it == m.vocab.end()) fail("{}: unk_token '{}' is not in the vocabulary", source, unk);
    m.unk_id = it->second;
  }
  read_normalizer(j.contains("normalizer") ? j["normalizer"] : json(), source + ": normalizer", p->normalizers);
  read_pre_tokenizer(j.contains("pre_tokenizer") ? j["pre_tokenizer"] : json(), source + ": pre_tokenizer",
                     p->pre_tokenizers);
  read_decoder(j.contains("decoder") ? j["decoder"] : json(), source + ": decoder", p->decoder);
  for (const PreTokenizer& pt : p->pre_tokenizers)
    if (pt.kind == PreTokenizer::Kind::ByteLevel) p->decoder.byte_level = true;
  if (m.byte_fallback && p->decoder.byte_level) fail("{}: byte_fallback together with a byte-level alphabet", source);
  if (m.byte_fallback) p->decoder.byte_fallback = true;
  SpecialTokens specials;
  read_post_processor(j.contains("post_processor") ? j["post_processor"] : json(), source + ": post_processor", specials);

  std::vector<AddedToken> added;
  if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
    if (!j["added_tokens"].is_array()) fail("{}: added_tokens is not a list", source);
    for (const json& t : j["added_tokens"]) {
      const std::string w = source + ": added token";
      AddedToken a;
      a.id = static_cast<int>(json_int(t, "id", w, 0, 1 << 24));
      a.content = json_string(t, "content", w);
      a.special = json_bool_or(t, "special", w, false);
      a.lstrip = json_bool_or(t, "lstrip", w, false);
      a.rstrip = json_bool_or(t, "rstrip", w, false);
      a.single_word = json_bool_or(t, "single_word", w, false);
      added.push_back(std::move(a));
    }
  }
  auto tok = std::make_unique<BpeTokenizer>(std::move(p));
  tok->set_added_tokens(std::move(added));
  tok->set_specials(specials);
  return tok;
}

}  // namespace baq
