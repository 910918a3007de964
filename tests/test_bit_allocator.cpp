// BAQ's allocation on synthetic columns with known loss coefficients c_j: the closed form, the
// equal-loss structure, the exact budget, clamping by reverse water-filling, non-power-of-two levels.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>

#include "baq/bit_allocator.hpp"
#include "baq/error.hpp"

namespace baq {
namespace {

std::vector<double> coefficients(size_t n, double spread_bits, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(-spread_bits, spread_bits);
  std::vector<double> c(n);
  for (auto& v : c) v = std::exp2(2.0 * u(rng));  // log2 c uniform over ±2·spread
  return c;
}

double geomean(const std::vector<double>& c) {
  double s = 0;
  for (double v : c) s += std::log2(v);
  return std::exp2(s / c.size());
}

double spread(const std::vector<double>& v) {
  const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  return *hi / *lo;
}

TEST(BitAllocator, UnclampedEqualsClosedFormAndEqualisesLoss) {
  const auto c = coefficients(301, 1.0, 1);  // rates stay within R̄ ± 1: nothing clamps at R̄ = 3
  const BitAllocation a = BitAllocator(8).allocate(c, 3.0);
  const double g = geomean(c);
  std::vector<double> before, after;
  for (size_t j = 0; j < c.size(); ++j) {
    EXPECT_NEAR(a.rate[j], 3.0 + 0.5 * std::log2(c[j] / g), 1e-9) << j;
    before.push_back(c[j] * std::exp2(-6.0));
    after.push_back(c[j] * std::exp2(-2.0 * a.rate[j]));
  }
  EXPECT_GT(spread(before), 10.0);
  EXPECT_LT(spread(after), 1.0 + 1e-9);  // every column has the same modelled loss
  // Predicted loss ratio geomean(ℓ)/mean(ℓ) at uniform rates.
  const double mean = std::accumulate(before.begin(), before.end(), 0.0) / before.size();
  EXPECT_NEAR(a.predicted_loss_ratio, geomean(before) / mean, 1e-9);
  EXPECT_LT(a.predicted_loss_ratio, 1.0);
}

TEST(BitAllocator, IntegerLevelsMeetTheBudgetToOneOverColumns) {
  for (double budget : {2.0, 2.5, 3.0, 3.25, 4.0}) {
    const auto c = coefficients(173, 2.0, 2);
    const BitAllocation a = BitAllocator(8).allocate(c, budget);
    double bits = 0;
    for (int L : a.levels) {
      ASSERT_GE(L, 1);
      ASSERT_LE(L, 256);
      bits += std::log2(static_cast<double>(L));
    }
    const double mean = bits / c.size();
    EXPECT_NEAR(a.realised, mean, 1e-12);
    EXPECT_LE(mean, budget + 1e-12) << budget;
    EXPECT_GT(mean, budget - 1.0 / c.size()) << budget;
  }
}

// Under a budget of stored bits whose cost beyond the codes depends on the levels — here a row of
// ceil(Σ log2 L_j) bits (as radix rows are stored), 8 bits a column for its level count, 32 for a
// range — the allocation fits from below and leaves under two bits a row unspent (one for the
// integer levels, one for the ceiling), from a first guess that overshoots and from one that fits.
TEST(BitAllocator, StoredBudgetIsMetFromBelowToTwoOverColumns) {
  const auto c = coefficients(173, 2.0, 4);
  const double n = static_cast<double>(c.size());
  const auto stored = [&](const std::vector<int>& levels) {
    double bits = 0;
    for (int L : levels) bits += std::log2(static_cast<double>(L));
    return (std::ceil(bits - 1e-9) + 8.0 * n + 32.0) / n;
  };
  const auto allocate = [&](double b) { return BitAllocator(8).allocate(c, b); };
  for (double budget : {10.5, 11.0, 11.37, 12.2})
    for (double guess : {budget - 8.0, budget - 8.5}) {
      const BitAllocation a = allocate_within_stored_budget(guess, budget, 1.0 / n, allocate, stored, "test");
      EXPECT_LE(stored(a.levels), budget) << budget << " from " << guess;
      EXPECT_GT(stored(a.levels), budget - 2.0 / n) << budget << " from " << guess;
    }
  EXPECT_THROW(allocate_within_stored_budget(0.5, 8.1, 1.0 / n, allocate, stored, "test"), Error);
}

TEST(BitAllocator, NonPowerOfTwoLevelsAndSingleLevelColumnsAppear) {
  auto c = coefficients(200, 3.0, 3);
  c[0] = 1e-12;  // a column that barely matters: clamped to 0 bits, one level
  const BitAllocation a = BitAllocator(8).allocate(c, 2.5);
  EXPECT_EQ(a.rate[0], 0.0);
  EXPECT_EQ(a.levels[0], 1);
  std::set<int> seen(a.levels.begin(), a.levels.end());
  EXPECT_TRUE(seen.count(3) || seen.count(5) || seen.count(6) || seen.count(7)) << "only powers of two";
}

TEST(BitAllocator, ClampingReSolvesOnTheFreeColumns) {
  auto c = coefficients(100, 0.5, 4);
  for (int j = 0; j < 10; ++j) c[j] = 1e-20;  // would want negative rates
  for (int j = 10; j < 15; ++j) c[j] = 1e20;  // would want more than R_max
  const double budget = 3.0, rmax = 6.0;
  const BitAllocation a = BitAllocator(rmax).allocate(c, budget);
  double mean = 0;
  for (double r : a.rate) mean += r / c.size();
  EXPECT_NEAR(mean, budget, 1e-9);  // the budget holds with the clamps in place
  for (int j = 0; j < 10; ++j) EXPECT_EQ(a.rate[j], 0.0);
  for (int j = 10; j < 15; ++j) EXPECT_EQ(a.rate[j], rmax);
  // Free columns keep the closed-form differences and a common water level θ.
  for (size_t j = 15; j < c.size(); ++j) EXPECT_NEAR(a.rate[j], a.theta + 0.5 * std::log2(c[j]), 1e-9);
  // The budget freed by the clamps moves to the free columns: their mean is above R̄... solved exactly:
  // 10·0 + 5·6 + Σ_free R = 300  ⇒  Σ_free R = 270 over 85 columns.
  double free_sum = 0;
  for (size_t j = 15; j < c.size(); ++j) free_sum += a.rate[j];
  EXPECT_NEAR(free_sum, 270.0, 1e-7);
}

TEST(BitAllocator, ModelWideBudgetWeightsColumnsByRows) {
  // Two "layers": 40 columns of 64 rows and 60 columns of 16 rows.
  auto c = coefficients(100, 1.0, 5);
  std::vector<double> w(100, 16.0);
  for (int j = 0; j < 40; ++j) w[j] = 64.0;
  const BitAllocation a = BitAllocator(8).allocate(c, 3.0, w);
  double sw = 0, slog = 0, used = 0, bits = 0;
  for (size_t j = 0; j < c.size(); ++j) sw += w[j], slog += w[j] * std::log2(c[j]);
  const double gw = std::exp2(slog / sw);
  for (size_t j = 0; j < c.size(); ++j) {
    EXPECT_NEAR(a.rate[j], 3.0 + 0.5 * std::log2(c[j] / gw), 1e-9);
    used += w[j] * a.rate[j];
    bits += w[j] * std::log2(static_cast<double>(a.levels[j]));
  }
  EXPECT_NEAR(used / sw, 3.0, 1e-9);
  EXPECT_LE(bits / sw, 3.0 + 1e-12);
  EXPECT_GT(bits / sw, 3.0 - 64.0 / sw);  // within the heaviest column's weight
}

// A floor of three levels: no column below it, the budget still met from below, and the free
// columns keep the closed form's differences above the floor.
TEST(BitAllocator, FloorOfThreeLevelsHolds) {
  auto c = coefficients(200, 3.0, 9);  // log2 c over ±6: unclamped, many columns would get < 1.58 bits
  const double floor_bits = std::log2(3.0), budget = 2.5;
  const BitAllocation a = BitAllocator(8.0, floor_bits).allocate(c, budget);
  double mean = 0, realised = 0;
  for (size_t j = 0; j < c.size(); ++j) {
    EXPECT_GE(a.rate[j], floor_bits);
    EXPECT_GE(a.levels[j], 3);
    mean += a.rate[j] / c.size();
    realised += std::log2(a.levels[j]) / c.size();
    if (a.rate[j] > floor_bits + 1e-9 && a.rate[j] < 8.0) {
      EXPECT_NEAR(a.rate[j], a.theta + 0.5 * std::log2(c[j]), 1e-9);
    }
  }
  EXPECT_NEAR(mean, budget, 1e-9);
  EXPECT_LE(realised, budget + 1e-12);
  EXPECT_GT(realised, budget - 1.0 / c.size());
  EXPECT_GT(std::count_if(a.rate.begin(), a.rate.end(), [&](double r) { return r == floor_bits; }), 10);
  EXPECT_THROW(BitAllocator(8.0, floor_bits).allocate(c, 1.0), Error);  // a budget below the floor
}

TEST(BitAllocator, RejectsBadInput) {
  EXPECT_THROW(BitAllocator(8).allocate({}, 3.0), Error);
  EXPECT_THROW(BitAllocator(8).allocate({1.0, NAN}, 3.0), Error);
  EXPECT_THROW(BitAllocator(8).allocate({1.0, 2.0}, 9.0), Error);
  EXPECT_THROW(BitAllocator(8).allocate({1.0, 2.0}, 3.0, {1.0}), Error);
}

}  // namespace
}  // namespace baq
