#pragma once
// A linear solved on one rank of an MPI run, as the other ranks receive it: its record (every field,
// doubles exact) and its packed form as a .baq "packed" record.
#include <memory>
#include <string>

#include "baq/calibrate.hpp"

namespace baq {

std::string encode_solved_layer(const LayerRecord& rec, const PackedLinear& packed);
void decode_solved_layer(const std::string& bytes, LayerRecord& rec, std::shared_ptr<PackedLinear>& packed);

// Stage seconds as bytes (the report gathers every rank's).
std::string encode_stages(const StageSeconds& s);
StageSeconds decode_stages(const std::string& bytes);

}  // namespace baq
