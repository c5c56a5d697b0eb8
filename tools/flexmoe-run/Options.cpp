//===- Options.cpp - flexmoe-run's command line ---------------------------===//

#include "Options.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <string_view>

using namespace flexmoe;
using namespace flexmoe::run;

std::string flexmoe::run::usage() {
  return R"(flexmoe-run: train with a compiled flexmoe program (.fmoe) on the CPU

  flexmoe-run tiny.fmoe                      # the built-in corpus, 300 steps
  flexmoe-run tiny.fmoe --data corpus.txt --steps 1000 --lr 3e-3 --batch 32
  flexmoe-run tiny.fmoe --checkpoint-dir ckpt --checkpoint-every 100
  flexmoe-run tiny.fmoe --resume ckpt --steps 2000

USAGE: flexmoe-run <program.fmoe> [options]

Data:
  --data <path>             Training corpus: raw text (byte tokens) or token ids
                            (default: the built-in King James Bible corpus)
  --data-format <f>         auto|text|u16|i32 (auto: .bin = u16, .i32 = i32,
                            anything else text; default auto)
  --eval-fraction <f>       Tail of the corpus held out for eval, in [0, 1)
                            (default 0.05)

Training:
  --steps <n>               Train until this step (default 300)
  --stop-at <n>             Stop after step n, checkpoint and exit: the run
                            (schedule included) is that of --steps, and
                            --resume continues it (a time-boxed job)
  --batch <b>               Global batch in sequences: the program's batch or a
                            multiple of it (gradient accumulation; default the
                            program's)
  --lr <x>                  Peak learning rate (default the compiled --lr)
  --min-lr <x>              Learning rate at the end of the schedule
                            (default lr/10)
  --warmup <n>              Linear warm-up steps (default min(100, steps/10))
  --schedule <s>            cosine|linear|constant decay after warm-up
                            (default cosine)
  --clip-grad <x>           Clip gradients to this global L2 norm, 0 = off
                            (default 1.0)
  --loss-scale <x|dynamic>  Loss scale; steps whose gradients overflow are
                            skipped (default 1). dynamic: start at 65536, halve
                            after an overflow, double after
                            --loss-scale-window overflow-free steps
  --loss-scale-window <n>   Overflow-free steps that double a dynamic loss
                            scale (default 2000)
  --seed <n>                Seeds the parameters and the batches (default 0)

Evaluation and logging:
  --eval-every <n>          Evaluate every n steps and at the end
                            (default steps/5)
  --eval-batches <n>        Eval batches per evaluation (default 16)
  --log-every <n>           A log line every n steps (default 1)
  --metrics <file>          Also write every log line to a .csv or .jsonl file
  --progress <p>            auto|always|never: a progress line on stderr
                            (auto: when stderr is a terminal)

Checkpoints:
  --checkpoint-dir <dir>    Write checkpoints (safetensors + JSON sidecar) here:
                            at the end, on Ctrl-C, and every --checkpoint-every
  --checkpoint-every <n>    Steps between checkpoints (default 0: only at the end)
  --resume <path>           Continue from a checkpoint (its path without
                            extension, or a directory: its latest); flags not
                            given come from the checkpoint, and new
                            checkpoints go beside it unless --checkpoint-dir

Device:
  --device <d>              cpu|cuda|cuda:<n> (default cpu). cuda: one GPU per
                            rank, the rank's local index modulo the node's GPUs
                            unless <n> is given; under mpirun the all-to-alls
                            and all-reduces then go through NCCL
  --precision <p>           fp32|bf16 (default fp32). bf16 (CUDA): GEMMs round
                            their operands to bfloat16 and accumulate in fp32
                            on tensor cores; parameters, optimizer state and
                            activations stay fp32 (fp32 master weights)
  --deterministic           CUDA: no floating-point atomics whose order changes
                            results (the CPU is always deterministic)

Communication:
  --no-overlap              Run every gradient all-reduce blocking, where the
                            backward pass reaches it, instead of overlapping
                            it with the rest of the backward pass

Expert placement (docs/scheduling.md):
  --placement-policy <p>    static|shadow|flexmoe (default static):
                            static keeps the compiled placement; shadow
                            replicates the hottest experts onto every rank for
                            a step when the cost model says it pays (FasterMoE);
                            flexmoe adds and removes expert replicas and moves
                            them between ranks when the load is uneven (FlexMoE)
  --rebalance-threshold <x> flexmoe: re-plan when the balance ratio (largest
                            rank load / mean) exceeds x > 1 (default 1.25)
  --monitor-window <n>      Steps of routing counts the policies average
                            (default 10)
  --max-slots <n>           Expert slots a rank may fill, at most the
                            program's --slots-per-device (default all)
  --replan-interval <n>     Steps a new placement is expected to last; the
                            migration cost is spread over them (default 50)
  --min-gain <f>            A re-plan must shorten the predicted step by this
                            fraction (default 0.02)
  --trace-routing <file>    Record every step's token counts per layer, rank
                            and expert (JSON lines; docs/scheduling.md)
  --decision-log <file>     Write every re-plan decision as a JSON line
  --check-replicas          After every step and migration, check that all
                            replicas of every expert hold identical parameters
                            and optimizer state, and that migrations lose
                            nothing (an all-gather of checksums per step)
  --routing-skew <s>        none|zipf:<s>|hotspot:<b>: a synthetic load
                            generator that biases the gate's logits by
                            -s*ln(rank+1) or +b on one expert (default none)
  --skew-period <n>         The skew's ranking of experts rotates by one every
                            n steps (default 0: fixed)

  --help                    This text
)";
}

const char *flexmoe::run::scheduleName(Schedule schedule) {
  switch (schedule) {
  case Schedule::Cosine:
    return "cosine";
  case Schedule::Linear:
    return "linear";
  case Schedule::Constant:
    return "constant";
  }
  return "?";
}

std::string flexmoe::run::skewName(SkewKind kind, double strength) {
  char text[48];
  switch (kind) {
  case SkewKind::None:
    return "none";
  case SkewKind::Zipf:
    std::snprintf(text, sizeof text, "zipf:%g", strength);
    return text;
  case SkewKind::Hotspot:
    std::snprintf(text, sizeof text, "hotspot:%g", strength);
    return text;
  }
  return "?";
}

namespace {

Status parseInt(std::string_view flag, std::string_view text, int64_t min,
                int64_t &out) {
  int64_t value = 0;
  auto [end, error] =
      std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size())
    return errorf("--", flag, " expects an integer, got '", text, "'");
  if (value < min)
    return errorf("--", flag, " must be at least ", min, ", got ", value);
  out = value;
  return Status::ok();
}

Status parseReal(std::string_view flag, std::string_view text, double min,
                 double maxExclusive, double &out) {
  std::string copy(text);
  char *end = nullptr;
  double value = std::strtod(copy.c_str(), &end);
  if (copy.empty() || end != copy.c_str() + copy.size() ||
      !std::isfinite(value))
    return errorf("--", flag, " expects a number, got '", text, "'");
  if (value < min || value >= maxExclusive)
    return errorf("--", flag, " must lie in [", min, ", ", maxExclusive,
                  "), got ", value);
  out = value;
  return Status::ok();
}

} // namespace

Status flexmoe::run::parseOptions(int argc, char **argv, Options &options,
                                  bool &wantsHelp) {
  constexpr double kHuge = 1e30;
  using Handler = std::function<Status(std::string_view)>;
  Options &o = options;
  std::map<std::string, Handler, std::less<>> flags = {
      {"data",
       [&](std::string_view v) {
         o.data = v;
         return Status::ok();
       }},
      {"data-format",
       [&](std::string_view v) {
         if (v != "auto" && v != "text" && v != "u16" && v != "i32")
           return errorf("--data-format must be auto, text, u16 or i32, got '",
                         v, "'");
         o.dataFormat = v;
         return Status::ok();
       }},
      {"eval-fraction",
       [&](std::string_view v) {
         return parseReal("eval-fraction", v, 0, 1, o.evalFraction);
       }},
      {"steps",
       [&](std::string_view v) { return parseInt("steps", v, 1, o.steps); }},
      {"stop-at",
       [&](std::string_view v) { return parseInt("stop-at", v, 1, o.stopAt); }},
      {"batch",
       [&](std::string_view v) { return parseInt("batch", v, 1, o.batch); }},
      {"lr",
       [&](std::string_view v) {
         Status s = parseReal("lr", v, 0, kHuge, o.lr);
         if (s.isOk() && !(o.lr > 0))
           return errorf("--lr must be positive, got ", v);
         return s;
       }},
      {"min-lr",
       [&](std::string_view v) {
         return parseReal("min-lr", v, 0, kHuge, o.minLr);
       }},
      {"warmup",
       [&](std::string_view v) { return parseInt("warmup", v, 0, o.warmup); }},
      {"schedule",
       [&](std::string_view v) {
         if (v == "cosine")
           o.schedule = Schedule::Cosine;
         else if (v == "linear")
           o.schedule = Schedule::Linear;
         else if (v == "constant")
           o.schedule = Schedule::Constant;
         else
           return errorf("--schedule must be cosine, linear or constant, got '",
                         v, "'");
         return Status::ok();
       }},
      {"clip-grad",
       [&](std::string_view v) {
         return parseReal("clip-grad", v, 0, kHuge, o.clipGrad);
       }},
      {"loss-scale",
       [&](std::string_view v) {
         if (v == "dynamic") {
           o.dynamicLossScale = true;
           o.lossScale = 65536;
           return Status::ok();
         }
         o.dynamicLossScale = false;
         Status s = parseReal("loss-scale", v, 0, 3e38, o.lossScale);
         if (s.isOk() && !(o.lossScale > 0))
           return errorf("--loss-scale must be positive, got ", v);
         return s;
       }},
      {"loss-scale-window",
       [&](std::string_view v) {
         return parseInt("loss-scale-window", v, 1, o.lossScaleWindow);
       }},
      {"device",
       [&](std::string_view v) {
         if (v == "cpu" || v == "cuda") {
           o.device = v;
           o.cudaIndex = -1;
           return Status::ok();
         }
         if (v.starts_with("cuda:")) {
           o.device = "cuda";
           Status s = parseInt("device", v.substr(5), 0, o.cudaIndex);
           if (!s.isOk())
             return errorf("--device cuda:<n> needs a GPU index >= 0, got '", v,
                           "'");
           return s;
         }
         return errorf("--device must be cpu, cuda or cuda:<n>, got '", v, "'");
       }},
      {"precision",
       [&](std::string_view v) {
         if (v != "fp32" && v != "bf16")
           return errorf("--precision must be fp32 or bf16, got '", v, "'");
         o.precision = v;
         return Status::ok();
       }},
      {"seed",
       [&](std::string_view v) {
         int64_t seed = 0;
         FLEXMOE_RETURN_IF_ERROR(parseInt("seed", v, 0, seed));
         o.seed = static_cast<uint64_t>(seed);
         return Status::ok();
       }},
      {"eval-every",
       [&](std::string_view v) {
         return parseInt("eval-every", v, 1, o.evalEvery);
       }},
      {"eval-batches",
       [&](std::string_view v) {
         return parseInt("eval-batches", v, 1, o.evalBatches);
       }},
      {"log-every",
       [&](std::string_view v) {
         return parseInt("log-every", v, 1, o.logEvery);
       }},
      {"metrics",
       [&](std::string_view v) {
         if (!v.ends_with(".csv") && !v.ends_with(".jsonl"))
           return errorf("--metrics must name a .csv or .jsonl file, got '", v,
                         "'");
         o.metrics = v;
         return Status::ok();
       }},
      {"checkpoint-dir",
       [&](std::string_view v) {
         o.checkpointDir = v;
         return Status::ok();
       }},
      {"checkpoint-every",
       [&](std::string_view v) {
         return parseInt("checkpoint-every", v, 1, o.checkpointEvery);
       }},
      {"resume",
       [&](std::string_view v) {
         o.resume = v;
         return Status::ok();
       }},
      {"progress",
       [&](std::string_view v) {
         if (v == "auto")
           o.progress = Progress::Auto;
         else if (v == "always")
           o.progress = Progress::Always;
         else if (v == "never")
           o.progress = Progress::Never;
         else
           return errorf("--progress must be auto, always or never, got '", v,
                         "'");
         return Status::ok();
       }},
      {"placement-policy",
       [&](std::string_view v) {
         if (v != "static" && v != "shadow" && v != "flexmoe")
           return errorf(
               "--placement-policy must be static, shadow or flexmoe, got '", v,
               "'");
         o.placementPolicy = v;
         return Status::ok();
       }},
      {"rebalance-threshold",
       [&](std::string_view v) {
         Status s = parseReal("rebalance-threshold", v, 1, kHuge,
                              o.rebalanceThreshold);
         if (s.isOk() && !(o.rebalanceThreshold > 1))
           return errorf("--rebalance-threshold must exceed 1 (a balance "
                         "ratio of 1 is perfect balance), got ",
                         v);
         return s;
       }},
      {"monitor-window",
       [&](std::string_view v) {
         return parseInt("monitor-window", v, 1, o.monitorWindow);
       }},
      {"max-slots",
       [&](std::string_view v) {
         return parseInt("max-slots", v, 1, o.maxSlots);
       }},
      {"replan-interval",
       [&](std::string_view v) {
         return parseReal("replan-interval", v, 1, kHuge, o.replanInterval);
       }},
      {"min-gain",
       [&](std::string_view v) {
         return parseReal("min-gain", v, 0, 1, o.minGain);
       }},
      {"trace-routing",
       [&](std::string_view v) {
         o.traceRouting = v;
         return Status::ok();
       }},
      {"decision-log",
       [&](std::string_view v) {
         o.decisionLog = v;
         return Status::ok();
       }},
      {"routing-skew",
       [&](std::string_view v) {
         if (v == "none") {
           o.skew = SkewKind::None;
           o.skewStrength = 0;
           return Status::ok();
         }
         size_t colon = v.find(':');
         std::string_view kind = v.substr(0, colon);
         if ((kind != "zipf" && kind != "hotspot") ||
             colon == std::string_view::npos)
           return errorf("--routing-skew must be none, zipf:<s> or "
                         "hotspot:<b>, got '",
                         v, "'");
         o.skew = kind == "zipf" ? SkewKind::Zipf : SkewKind::Hotspot;
         Status s = parseReal("routing-skew", v.substr(colon + 1), 0, 1e3,
                              o.skewStrength);
         if (!s.isOk())
           return errorf("--routing-skew ", kind,
                         ":<x> needs a number in [0, 1000), got '", v, "'");
         return s;
       }},
      {"skew-period",
       [&](std::string_view v) {
         return parseInt("skew-period", v, 0, o.skewPeriod);
       }},
  };
  bool noOverlap = false;
  // Flags without a value.
  std::map<std::string, bool *, std::less<>> switches = {
      {"check-replicas", &o.checkReplicas},
      {"deterministic", &o.deterministic},
      {"no-overlap", &noOverlap},
  };

  wantsHelp = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      wantsHelp = true;
      return Status::ok();
    }
    if (!arg.starts_with("--")) {
      if (arg.starts_with("-") && arg.size() > 1)
        return errorf("unknown option '", arg, "' (see --help)");
      if (!o.program.empty())
        return errorf("one program at a time: got '", o.program, "' and '", arg,
                      "'");
      o.program = arg;
      continue;
    }
    std::string_view name = arg.substr(2), value;
    bool inlineValue = false;
    if (size_t eq = name.find('='); eq != std::string_view::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      inlineValue = true;
    }
    if (auto on = switches.find(name); on != switches.end()) {
      if (inlineValue)
        return errorf("--", name, " takes no value");
      *on->second = true;
      o.given.insert(std::string(name));
      continue;
    }
    auto flag = flags.find(name);
    if (flag == flags.end()) {
      std::string known;
      for (const auto &[known_name, handler] : flags)
        known += " --" + known_name;
      for (const auto &[known_name, field] : switches)
        known += " --" + known_name;
      return errorf("unknown option '--", name, "'; the options are", known);
    }
    if (!inlineValue) {
      if (i + 1 >= argc)
        return errorf("--", name, " needs a value");
      value = argv[++i];
    }
    FLEXMOE_RETURN_IF_ERROR(flag->second(value));
    o.given.insert(std::string(name));
  }
  if (noOverlap)
    o.overlap = false;
  if (o.program.empty())
    return Status::error("no program given: flexmoe-run <program.fmoe> "
                         "[options] (see --help)");
  if (o.precision == "bf16" && o.device != "cuda")
    return Status::error("--precision bf16 needs --device cuda (the CPU "
                         "backend computes in fp32)");
  if (o.given.count("loss-scale-window") && !o.dynamicLossScale)
    return Status::error("--loss-scale-window applies to --loss-scale "
                         "dynamic only");
  if (o.given.count("min-lr") && o.given.count("lr") && o.minLr > o.lr)
    return errorf("--min-lr ", o.minLr, " exceeds --lr ", o.lr);
  return Status::ok();
}
