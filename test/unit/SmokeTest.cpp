#include "runtime/support/Status.h"

#include <gtest/gtest.h>

TEST(Status, CarriesMessageWithContext) {
  flexmoe::Status status = flexmoe::errorf("expert ", 7, " has no replica")
                               .withContext("layer moe3");
  ASSERT_FALSE(status.isOk());
  EXPECT_EQ(status.message(), "layer moe3: expert 7 has no replica");
}
