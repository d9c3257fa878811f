// Precompiled header: the heavy third-party headers, compiled once per build.
#pragma once
#include <torch/torch.h>
#include <nlohmann/json.hpp>
#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>
