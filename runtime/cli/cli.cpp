// cli.cpp - phimoe-bin's command line, the same for CPU and CUDA builds: completion, chat,
// token ids, logits dump, tokenize, bench, serve (see phimoe_rt/cli.h).
#include "phimoe_rt/cli.h"

#include "generate.h"

#include "phimoe_rt/session.h" // WeightPack, parse_token_ids, write_npy, executable_dir

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <fstream>
#include <iostream>
#include <random>
#include <thread>
#include <unistd.h>

namespace phimoe_rt {

namespace {

int fail(const std::string &message) {
  std::fprintf(stderr, "phimoe-bin: error: %s\n", message.c_str());
  return 1;
}

struct Options {
  std::string prompt, tokens, dump_path, system, weights, text, ids;
  std::string tokenizer_dir;
  int n_predict = -1, threads = 0, ctx_size = 0;
  bool no_display_prompt = false;
  bool no_mmap = false, mmap = false;
  SamplingParams sampling;
  // Structured replies (-p, chat): JSON mode, or a JSON schema given inline or in a file.
  bool json = false;
  std::string json_schema, json_schema_file;
  // bench
  int bench_prompt = 512, bench_gen = 128, bench_reps = 5;
  bool bench_json = false;
  // serve
  ServerOptions server;
};

struct Timing {
  double mean = 0, stddev = 0;
};

Timing rate_stats(const std::vector<double> &rates) {
  Timing t;
  for (double r : rates)
    t.mean += r / rates.size();
  for (double r : rates)
    t.stddev += (r - t.mean) * (r - t.mean) / std::max<size_t>(1, rates.size() - 1);
  t.stddev = std::sqrt(t.stddev);
  return t;
}

// bench: prompt processing and generation speed, as llama-bench reports them.
// The pp and tg rates of a build: on a GPU each append copies the logits back, so every
// decode step includes a device synchronisation.
int run_bench(const ModelInfo &info, const Options &o, ModelSession &session,
              const Backend &backend, const WeightPack &pack) {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> pick(3, info.vocab - 1);
  std::vector<int32_t> prompt(o.bench_prompt);
  for (int32_t &t : prompt)
    t = pick(rng);
  using clock = std::chrono::steady_clock;
  std::vector<double> pp, tg;
  // One warm-up run (page in the weights), then the timed repetitions.
  for (int rep = -1; rep < o.bench_reps; ++rep) {
    session.reset();
    const float *logits = nullptr;
    auto t0 = clock::now();
    if (o.bench_prompt > 0)
      logits = session.append(prompt.data(), o.bench_prompt);
    auto t1 = clock::now();
    int32_t next = pick(rng);
    for (int i = 0; i < o.bench_gen; ++i) {
      if (logits)
        next = static_cast<int32_t>(std::max_element(logits, logits + info.vocab) - logits);
      logits = session.append(&next, 1);
    }
    auto t2 = clock::now();
    if (rep < 0)
      continue;
    if (o.bench_prompt > 0)
      pp.push_back(o.bench_prompt / std::chrono::duration<double>(t1 - t0).count());
    if (o.bench_gen > 0)
      tg.push_back(o.bench_gen / std::chrono::duration<double>(t2 - t1).count());
  }
  Timing p = rate_stats(pp), g = rate_stats(tg);
  // How the host holds the weights: read (and how much on huge pages) or mapped.
  const char *held = pack.read_into_memory() ? "read" : "mapped";
  const unsigned long long huge = pack.huge_page_bytes();
  if (o.bench_json) {
    // threads: the CPU's worker threads; 0 for a build that computes on a GPU.
    std::printf("{\"model_hash\": \"%llu\", \"threads\": %d, \"repetitions\": %d, "
                "\"pp\": {\"tokens\": %d, \"tokens_per_s\": %.3f, \"stddev\": %.3f}, "
                "\"tg\": {\"tokens\": %d, \"tokens_per_s\": %.3f, \"stddev\": %.3f}, "
                "\"weights_bytes\": %llu, \"weights\": \"%s\", \"huge_page_bytes\": %llu}\n",
                static_cast<unsigned long long>(info.hash), backend.threaded ? o.threads : 0,
                o.bench_reps,
                o.bench_prompt, p.mean, p.stddev, o.bench_gen, g.mean, g.stddev,
                static_cast<unsigned long long>(info.pack_bytes), held, huge);
  } else {
    std::printf("| test | tokens/s |\n|---|---|\n");
    if (o.bench_prompt > 0)
      std::printf("| pp%d | %.2f ± %.2f |\n", o.bench_prompt, p.mean, p.stddev);
    if (o.bench_gen > 0)
      std::printf("| tg%d | %.2f ± %.2f |\n", o.bench_gen, g.mean, g.stddev);
    if (backend.threaded)
      std::printf("threads: %d, repetitions: %d\n", o.threads, o.bench_reps);
    else
      std::printf("device: %s, repetitions: %d\n", backend.name.c_str(), o.bench_reps);
    std::printf("weights: %s%s\n", held,
                pack.read_into_memory()
                    ? (", " + std::to_string(huge >> 20) + " MiB of them on huge pages").c_str()
                    : "");
  }
  return 0;
}

// --tokens: greedy ids, for tests and tools.
int run_ids(const ModelInfo &info, const Options &o, ModelSession &session) {
  std::vector<int32_t> prompt;
  std::string error;
  if (!parse_token_ids(o.tokens, "--tokens", info.vocab, prompt, error))
    return fail(error);
  int n_predict = o.n_predict < 0 ? 16 : o.n_predict;
  if (static_cast<int>(prompt.size()) + n_predict > session.capacity())
    return fail("the prompt (" + std::to_string(prompt.size()) + " tokens) and " +
                std::to_string(n_predict) + " generated tokens need a context of " +
                std::to_string(prompt.size() + n_predict) + ", more than --ctx-size " +
                std::to_string(session.capacity()));
  bool dump = !o.dump_path.empty();
  std::vector<float> all_logits;
  std::vector<float> *sink = dump ? &all_logits : nullptr;
  const float *logits = session.append(prompt.data(), static_cast<int>(prompt.size()), sink);
  for (int i = 0; i < n_predict; ++i) {
    int32_t next = static_cast<int32_t>(std::max_element(logits, logits + info.vocab) - logits);
    std::printf(i ? ",%d" : "%d", next);
    std::fflush(stdout);
    // The last token's logits are needed only for the dump.
    if (i + 1 < n_predict || dump)
      logits = session.append(&next, 1, sink);
  }
  std::printf("\n");
  if (dump && !write_npy(o.dump_path, all_logits.data(),
                         static_cast<int64_t>(all_logits.size() / info.vocab), info.vocab, error))
    return fail(error);
  return 0;
}

// The grammar --json or --json-schema(-file) asks replies to follow (null: none); false with
// `error` naming the option or the file, and the place in the schema, when it cannot be held.
bool reply_format(const Options &o, std::shared_ptr<const JsonGrammar> &format,
                  std::string &error) {
  if (o.json) {
    format = JsonGrammar::any_object();
    return true;
  }
  if (o.json_schema.empty() && o.json_schema_file.empty())
    return true;
  std::string text = o.json_schema, where = "--json-schema";
  if (!o.json_schema_file.empty()) {
    where = o.json_schema_file;
    std::ifstream file(o.json_schema_file, std::ios::binary);
    if (!file) {
      error = where + ": cannot read the JSON schema";
      return false;
    }
    text.assign(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
  }
  nlohmann::ordered_json schema;
  try {
    schema = nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::parse_error &e) {
    error = where + ": the JSON schema is not JSON (" + e.what() + ")";
    return false;
  }
  try {
    format = JsonGrammar::from_schema(schema);
  } catch (const JsonSchemaError &e) {
    error = where + ": the JSON schema at '#" + e.where() + "': " + e.what();
    return false;
  }
  return true;
}

int run_completion(const ModelInfo &info, const Options &o, ModelSession &session,
                   const Tokenizer &tokenizer, std::shared_ptr<const JsonGrammar> reply_as) {
  std::vector<int32_t> ids = tokenizer.encode(o.prompt, true);
  int max_tokens = o.n_predict < 0 ? 128 : o.n_predict;
  if (static_cast<int>(ids.size()) > session.capacity()) // refused before any output
    return fail("the prompt is " + std::to_string(ids.size()) +
                " tokens, which does not fit the context of " +
                std::to_string(session.capacity()) + " (--ctx-size)");
  if (!o.no_display_prompt) {
    std::fputs(o.prompt.c_str(), stdout);
    std::fflush(stdout);
  }
  Generator generator(session, tokenizer, o.sampling, info.vocab, std::move(reply_as));
  std::vector<int32_t> stops;
  if (auto eos = tokenizer.eos())
    stops.push_back(*eos);
  std::string reply, error;
  GenerationStats stats;
  if (!generator.generate(ids, max_tokens, stops, stdout, reply, stats, error))
    return fail(error);
  std::printf("\n");
  std::fprintf(stderr, "\n%s\n", stats.summary().c_str());
  return 0;
}

int run_chat(const ModelInfo &info, const Options &o, ModelSession &session,
             const Tokenizer &tokenizer, std::shared_ptr<const JsonGrammar> reply_as) {
  std::string notice;
  ChatFormat format = ChatFormat::from_template(tokenizer.chat_template(), notice);
  if (!notice.empty())
    std::fprintf(stderr, "phimoe-bin: %s\n", notice.c_str());
  std::vector<ChatMessage> messages;
  if (!o.system.empty())
    messages.push_back({"system", o.system});
  std::vector<int32_t> stops = format.stop_ids(tokenizer);
  Generator generator(session, tokenizer, o.sampling, info.vocab, std::move(reply_as));
  int max_tokens = o.n_predict < 0 ? 512 : o.n_predict;
  bool interactive = isatty(0);
  GenerationStats total;
  std::string line, reply, error;
  if (interactive)
    std::fprintf(stderr, "phimoe-bin chat: type a message, an empty line or Ctrl-D ends.\n");
  while (true) {
    if (interactive) {
      std::fputs("> ", stdout);
      std::fflush(stdout);
    }
    if (!std::getline(std::cin, line) || (interactive && line.empty()))
      break;
    messages.push_back({"user", line});
    // Keep room for the reply: drop the oldest turns when the history outgrows it.
    int budget = std::max(1, session.capacity() - std::min(max_tokens, session.capacity() / 2));
    int dropped = trim_history(format, tokenizer, messages, budget);
    if (dropped < 0)
      return fail("the message does not fit the context of " +
                  std::to_string(session.capacity()) + " tokens (--ctx-size)");
    if (dropped > 0)
      std::fprintf(stderr, "phimoe-bin: history trimmed: dropped the %d oldest message%s to "
                           "fit the context of %d tokens\n",
                   dropped, dropped == 1 ? "" : "s", session.capacity());
    std::vector<int32_t> ids = tokenizer.encode(format.render(messages, true), true);
    GenerationStats stats;
    if (!generator.generate(ids, max_tokens, stops, stdout, reply, stats, error,
                            format.reply_stands_alone()))
      return fail(error);
    std::printf("\n");
    std::fflush(stdout);
    messages.push_back({"assistant", reply});
    total.add(stats);
  }
  std::fprintf(stderr, "%s\n", total.summary().c_str());
  return 0;
}

} // namespace

int run_cli(int argc, char **argv, const ModelInfo &info, const Backend &backend) {
  std::string dir = executable_dir();
  Options o;
  o.weights = dir + "/weights.phw";
  o.tokenizer_dir = dir;
  o.threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

  CLI::App app{"phimoe-bin: a PhiMoE model compiled by phimoec (" + backend.name + " build).\n\n"
               "  phimoe-bin -p \"And God said\" -n 64             complete a text\n"
               "  phimoe-bin chat --system \"Be brief.\"             chat (stdin, a message per line)\n"
               "  phimoe-bin -p \"Hi\" --temperature 0               greedy\n"
               "  phimoe-bin tokenize \"Hello world\"                text -> ids\n"
               "  phimoe-bin detokenize 1,15043,3186               ids -> text\n"
               "  phimoe-bin --tokens 1,450 -n 8 --dump-logits l.npy   ids in, ids and logits out\n"
               "  phimoe-bin bench -p 512 -n 128 -r 5 [--json]     speed, as llama-bench\n"
               "  phimoe-bin serve --port 8080 --parallel 4        OpenAI-compatible HTTP server\n"};
  app.fallthrough();
  app.set_version_flag("--version", "phimoe-bin (phimoec), model hash " + std::to_string(info.hash));
  app.add_option("-p,--prompt", o.prompt, "complete this text");
  app.add_option("--tokens", o.tokens, "prompt as comma-separated token ids (greedy; prints ids)");
  app.add_option("-n,--max-tokens,--n-predict", o.n_predict,
                 "tokens to generate (default: 16 with --tokens, 128 with -p, 512 per chat reply)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--dump-logits", o.dump_path,
                 "with --tokens: write the logits of every prompt and generated position as a "
                 "float32 .npy array of shape [prompt + n, vocab]; row t holds the logits "
                 "after token t");
  app.add_option("--system", o.system, "chat: the system message");
  app.add_flag("--no-display-prompt", o.no_display_prompt, "-p: print only the continuation");
  app.add_option("--temperature", o.sampling.temperature, "0 is greedy")
      ->check(CLI::Range(0.0f, 100.0f))->capture_default_str();
  app.add_option("--top-k", o.sampling.top_k, "0: off")->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--top-p", o.sampling.top_p, "1: off")->check(CLI::Range(0.0f, 1.0f))
      ->capture_default_str();
  app.add_option("--min-p", o.sampling.min_p, "0: off")->check(CLI::Range(0.0f, 1.0f))
      ->capture_default_str();
  app.add_option("--repeat-penalty", o.sampling.repeat_penalty, "1: off")
      ->check(CLI::Range(0.0f, 10.0f))->capture_default_str();
  app.add_option("--frequency-penalty", o.sampling.frequency_penalty, "0: off")
      ->check(CLI::Range(-2.0f, 2.0f))->capture_default_str();
  app.add_option("--presence-penalty", o.sampling.presence_penalty, "0: off")
      ->check(CLI::Range(-2.0f, 2.0f))->capture_default_str();
  app.add_option("--seed", o.sampling.seed, "same seed, same output")->capture_default_str();
  auto *json = app.add_flag("--json", o.json, "-p, chat: the reply is one JSON object");
  auto *schema = app.add_option("-j,--json-schema", o.json_schema,
                                "-p, chat: the reply is a value of this JSON schema (the "
                                "keywords of docs/serving.md)");
  auto *schema_file = app.add_option("--json-schema-file", o.json_schema_file,
                                     "-p, chat: the same, the schema read from this file");
  json->excludes(schema)->excludes(schema_file);
  schema->excludes(schema_file);
  app.add_option("-t,--threads", o.threads,
                 backend.threaded ? "worker threads"
                                  : "worker threads of a CPU build (this build ignores it)")
      ->check(CLI::PositiveNumber);
  app.add_option("-c,--ctx-size", o.ctx_size,
                 "context (KV cache) in tokens (default: min(4096, max_position_embeddings); "
                 "with --tokens, prompt + n)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--weights", o.weights, "the weight pack (default: next to phimoe-bin)");
  // (The same words in CPU and CUDA builds, whose defaults differ.)
  auto *no_mmap = app.add_flag("--no-mmap", o.no_mmap,
                               "read the weight pack into memory, on 2 MiB pages where the kernel "
                               "gives them (a CPU build's default where it fits: faster decode)");
  app.add_flag("--mmap", o.mmap,
               "map the weight pack instead (a CUDA build's default; starts sooner, and shares "
               "the page cache between processes)")
      ->excludes(no_mmap);
  app.add_option("--tokenizer", o.tokenizer_dir,
                 "directory with tokenizer.json (default: next to phimoe-bin)");
  CLI::App *chat = app.add_subcommand("chat", "chat with the model");
  CLI::App *tokenize = app.add_subcommand("tokenize", "print the ids of a text");
  tokenize->add_option("text", o.text, "the text")->required();
  CLI::App *detokenize = app.add_subcommand("detokenize", "print the text of ids");
  detokenize->add_option("ids", o.ids, "comma-separated ids")->required();
  CLI::App *bench = app.add_subcommand(
      "bench", "prompt processing (pp) and generation (tg) speed on random tokens");
  bench->add_option("-p,--n-prompt", o.bench_prompt, "prompt tokens")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  bench->add_option("-n,--n-gen", o.bench_gen, "generated tokens")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  bench->add_option("-r,--repetitions", o.bench_reps, "timed repetitions (after one warm-up)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  bench->add_flag("--json", o.bench_json, "one JSON object instead of a table");
  CLI::App *serve = app.add_subcommand(
      "serve", "an OpenAI-compatible HTTP server (/v1/chat/completions, /v1/completions, "
               "/v1/models, /health, /metrics) with continuous batching");
  serve->add_option("--host", o.server.host, "address to listen on")->capture_default_str();
  serve->add_option("--port", o.server.port, "port (0: any free port, printed)")
      ->check(CLI::Range(0, 65535))->capture_default_str();
  serve->add_option("--api-key", o.server.api_key,
                    "require 'Authorization: Bearer KEY' on /v1/ routes");
  serve->add_option("--parallel", o.server.parallel, "sequences decoding together")
      ->check(CLI::Range(1, 1024))->capture_default_str();
  serve->add_option("--queue-size", o.server.queue_size,
                    "waiting requests beyond which requests get 503")
      ->check(CLI::Range(1, 1 << 20))->capture_default_str();
  serve->add_option("--alias", o.server.model, "the model id clients name")
      ->capture_default_str();
  serve->add_option("--block-size", o.server.block_size, "KV cache positions per block")
      ->check(CLI::Range(1, 4096))->capture_default_str();
  serve->add_option("--kv-blocks", o.server.kv_blocks,
                    "KV cache blocks in all (default: parallel * ctx-size / block-size)")
      ->check(CLI::NonNegativeNumber);
  serve->add_option("--step-delay-ms", o.server.step_delay_ms,
                    "pause after each batched step, emulating a slower model (for tests)")
      ->check(CLI::Range(0, 10000));
  CLI11_PARSE(app, argc, argv);

  int modes = !o.prompt.empty() + !o.tokens.empty() + chat->parsed() + tokenize->parsed() +
              detokenize->parsed() + bench->parsed() + serve->parsed();
  if (modes != 1)
    return fail(modes ? "give one of -p, --tokens, chat, tokenize, detokenize, bench, serve"
                      : "nothing to do: give -p \"text\", chat, --tokens ids, tokenize, "
                        "detokenize, bench or serve (--help for more)");
  if (!o.dump_path.empty() && o.tokens.empty())
    return fail("--dump-logits needs --tokens");
  if (serve->parsed() && !backend.serve)
    return fail("serve: " + backend.no_serve);
  std::string error;
  const bool structured = o.json || !o.json_schema.empty() || !o.json_schema_file.empty();
  if (structured && o.prompt.empty() && !chat->parsed())
    return fail("--json and --json-schema apply to -p and chat (serve takes response_format)");
  std::shared_ptr<const JsonGrammar> format;
  if (!reply_format(o, format, error))
    return fail(error);
  std::unique_ptr<Tokenizer> tokenizer;
  if (o.tokens.empty() && !bench->parsed()) {
    tokenizer = Tokenizer::load_dir(o.tokenizer_dir, error);
    if (!tokenizer)
      return fail(error);
  }
  if (tokenize->parsed()) {
    std::vector<int32_t> ids = tokenizer->encode(o.text, true);
    for (size_t i = 0; i < ids.size(); ++i)
      std::printf(i ? ",%d" : "%d", ids[i]);
    std::printf("\n");
    return 0;
  }
  if (detokenize->parsed()) {
    std::vector<int32_t> ids;
    if (!parse_token_ids(o.ids, "detokenize", tokenizer->vocab_size(), ids, error))
      return fail(error);
    std::printf("%s\n", tokenizer->decode(ids, false).c_str());
    return 0;
  }

  if (o.ctx_size == 0 && bench->parsed())
    o.ctx_size = o.bench_prompt + o.bench_gen;
  if (o.ctx_size == 0)
    o.ctx_size = !o.tokens.empty()
                     ? 0
                     : (info.max_position > 0 ? std::min(4096, info.max_position) : 4096);
  if (info.max_position > 0 && o.ctx_size > info.max_position)
    return fail("--ctx-size " + std::to_string(o.ctx_size) +
                " exceeds the model's max_position_embeddings " +
                std::to_string(info.max_position));
  const WeightPack::Load load = o.no_mmap ? WeightPack::Load::read
                                : o.mmap || !backend.read_weights ? WeightPack::Load::map
                                                                   : WeightPack::Load::automatic;
  auto pack = WeightPack::open(o.weights, info, error, load);
  if (!pack)
    return fail(error);
  if (!pack->note().empty())
    std::fprintf(stderr, "phimoe-bin: %s\n", pack->note().c_str());
  if (!o.tokens.empty() && o.ctx_size == 0) {
    // Exactly what --tokens needs.
    size_t count = std::count(o.tokens.begin(), o.tokens.end(), ',') + 1;
    o.ctx_size = static_cast<int>(count) + (o.n_predict < 0 ? 16 : o.n_predict);
  }
  // Errors of the device (no CUDA device, a failing CUDA call) end the run with a message
  // naming the backend.
  try {
    if (serve->parsed()) {
      o.server.ctx_size = o.ctx_size;
      o.server.threads = o.threads;
      return backend.serve(info, pack->data(), *tokenizer, o.server);
    }
    std::unique_ptr<ModelSession> session =
        backend.make_session(info, pack->data(), o.threads, o.ctx_size);
    if (!o.tokens.empty())
      return run_ids(info, o, *session);
    if (bench->parsed())
      return run_bench(info, o, *session, backend, *pack);
    if (chat->parsed())
      return run_chat(info, o, *session, *tokenizer, format);
    return run_completion(info, o, *session, *tokenizer, format);
  } catch (const std::exception &e) {
    return fail(backend.name + ": " + e.what());
  }
}

} // namespace phimoe_rt
