#include "calib/solved_layer.hpp"

#include <nlohmann/json.hpp>

#include "baq/baq_file.hpp"

namespace baq {

NLOHMANN_JSON_SERIALIZE_ENUM(RangeKind, {{RangeKind::F16, "f16"}, {RangeKind::Scaled8, "scaled8"}})
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(QuantSettings, bits, group_size, ranges, super_groups, sym, damp, block_size, act_order,
                                   clip_search, baq_order_invariant, baq_shrink, max_damp_retries)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(StorageBits, codes, ranges, widths, means)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(LayerRecord, name, rows, cols, hessian_trace, loss, proxy_loss, damp, damp_retries,
                                   n_groups, settings, bits, storage, loss_before, predicted_loss_ratio,
                                   measured_loss_ratio, baq_fell_back, sensitivity, level_histogram, levels,
                                   column_coefficients, seconds)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(StageSeconds, forward, hessian, reduce, solve, pack, broadcast, write)

std::string encode_solved_layer(const LayerRecord& rec, const PackedLinear& packed) {
  nlohmann::ordered_json fields;
  const std::string bytes = packed_record(packed, fields);
  const nlohmann::json j = {{"record", rec},
                            {"fields", fields},
                            {"packed", nlohmann::json::binary(std::vector<uint8_t>(bytes.begin(), bytes.end()))}};
  const std::vector<uint8_t> cbor = nlohmann::json::to_cbor(j);  // doubles as IEEE binary64: exact
  return std::string(cbor.begin(), cbor.end());
}

void decode_solved_layer(const std::string& bytes, LayerRecord& rec, std::shared_ptr<PackedLinear>& packed) {
  const nlohmann::json j = nlohmann::json::from_cbor(bytes);
  rec = j.at("record").get<LayerRecord>();
  const auto& codes = j.at("packed").get_binary();
  packed = std::make_shared<PackedLinear>(
      packed_from_record(j.at("fields"), codes.data(), codes.size(), fmt::format("{} as received from its rank", rec.name)));
}

std::string encode_stages(const StageSeconds& s) { return nlohmann::json(s).dump(); }
StageSeconds decode_stages(const std::string& bytes) { return nlohmann::json::parse(bytes).get<StageSeconds>(); }

}  // namespace baq
