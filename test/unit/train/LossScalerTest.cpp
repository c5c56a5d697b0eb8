//===- LossScalerTest.cpp - dynamic loss scaling --------------------------===//

#include "runtime/train/LossScaler.h"

#include <gtest/gtest.h>

using flexmoe::train::LossScaler;

TEST(LossScaler, OverflowsHalveAndQuietIntervalsDouble) {
  LossScaler scaler(3, 1024);
  EXPECT_EQ(scaler.scale(), 1024);
  EXPECT_TRUE(scaler.update(true));
  EXPECT_EQ(scaler.scale(), 512);
  EXPECT_FALSE(scaler.update(false));
  EXPECT_FALSE(scaler.update(false));
  EXPECT_EQ(scaler.goodSteps(), 2);
  // An overflow restarts the count.
  EXPECT_TRUE(scaler.update(true));
  EXPECT_EQ(scaler.scale(), 256);
  EXPECT_EQ(scaler.goodSteps(), 0);
  EXPECT_FALSE(scaler.update(false));
  EXPECT_FALSE(scaler.update(false));
  EXPECT_TRUE(scaler.update(false));
  EXPECT_EQ(scaler.scale(), 512);
  EXPECT_EQ(scaler.goodSteps(), 0);
}

TEST(LossScaler, StaysWithinItsBounds) {
  LossScaler low(1, 2);
  low.update(true);
  low.update(true);
  low.update(true);
  EXPECT_EQ(low.scale(), LossScaler::kMinScale);
  LossScaler high(1, LossScaler::kMaxScale);
  EXPECT_FALSE(high.update(false));
  EXPECT_EQ(high.scale(), LossScaler::kMaxScale);
}

TEST(LossScaler, RestoresACheckpointsStateAndRejectsBadOnes) {
  LossScaler scaler(10);
  EXPECT_EQ(scaler.scale(), LossScaler::kInitialScale);
  EXPECT_TRUE(scaler.restore(128, 7).isOk());
  EXPECT_EQ(scaler.scale(), 128);
  EXPECT_EQ(scaler.goodSteps(), 7);
  EXPECT_FALSE(scaler.restore(100, 0).isOk()); // not a power of two
  EXPECT_FALSE(scaler.restore(0.5, 0).isOk());
  EXPECT_FALSE(scaler.restore(128, 10).isOk());
  std::string message = scaler.restore(3, 0).message();
  EXPECT_NE(message.find("power of two"), std::string::npos) << message;
}
