// http.cpp - phimoe-bin serve: the OpenAI-compatible HTTP API (cpp-httplib, nlohmann-json)
// over an Engine (a BatchEngine on the CPU, a SessionEngine on a GPU). Routes: POST /v1/chat/completions, POST /v1/completions (both with
// server-sent events when "stream": true), GET /v1/models[/ID], GET /health, GET /metrics.
#include "phimoe_rt/server.h"

#include "phimoe_rt/batch.h"
#include "phimoe_rt/chat.h"

#include "../tokenizer/utf8.h"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <pthread.h>
#include <random>
#include <sstream>

namespace phimoe_rt {
namespace {

// Ordered: a JSON schema's properties keep the order the request gives them (the order a
// structured reply writes them in), and replies keep the order their fields are set in.
using json = nlohmann::ordered_json;

// JSON text; ill-formed UTF-8 (which the replies never hold) would become U+FFFD, not an
// exception.
std::string dump(const json &j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// An error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
struct ApiError {
  int status;
  std::string message, param, code;
};

const char *error_type(int status) {
  switch (status) {
  case 401: return "authentication_error";
  case 404: return "not_found_error";
  case 413: return "invalid_request_error";
  case 503: return "server_error";
  default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

json error_json(const ApiError &e) {
  json error = {{"message", e.message},
                {"type", error_type(e.status)},
                {"param", e.param.empty() ? json(nullptr) : json(e.param)},
                {"code", e.code.empty() ? json(nullptr) : json(e.code)}};
  return {{"error", error}};
}

void send_error(httplib::Response &res, const ApiError &e) {
  res.status = e.status;
  res.set_content(dump(error_json(e)), "application/json");
}

ApiError bad(const std::string &param, const std::string &message) {
  return {400, message, param, "invalid_value"};
}

// ---- request fields ----------------------------------------------------------------------

const json *field(const json &body, const char *name) {
  auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

double number(const json &body, const char *name, double fallback, double lo, double hi) {
  const json *v = field(body, name);
  if (!v)
    return fallback;
  if (!v->is_number())
    throw bad(name, std::string("'") + name + "' must be a number");
  double x = v->get<double>();
  if (!(x >= lo && x <= hi)) {
    std::ostringstream msg;
    msg << "'" << name << "' must lie in [" << lo << ", " << hi << "], got " << x;
    throw bad(name, msg.str());
  }
  return x;
}

int64_t integer(const json &body, const char *name, int64_t fallback, int64_t lo, int64_t hi) {
  const json *v = field(body, name);
  if (!v)
    return fallback;
  if (!v->is_number_integer())
    throw bad(name, std::string("'") + name + "' must be an integer");
  const bool out_of_range =
      v->is_number_unsigned()
          ? (v->get<uint64_t>() > static_cast<uint64_t>(hi) ||
             (lo > 0 && v->get<uint64_t>() < static_cast<uint64_t>(lo)))
          : (v->get<int64_t>() < lo || v->get<int64_t>() > hi);
  if (out_of_range)
    throw bad(name, std::string("'") + name + "' must lie in [" + std::to_string(lo) + ", " +
                        std::to_string(hi) + "]");
  return v->is_number_unsigned() ? static_cast<int64_t>(v->get<uint64_t>()) : v->get<int64_t>();
}

bool boolean(const json &body, const char *name, bool fallback) {
  const json *v = field(body, name);
  if (!v)
    return fallback;
  if (!v->is_boolean())
    throw bad(name, std::string("'") + name + "' must be true or false");
  return v->get<bool>();
}

// What both endpoints share: model, sampling, limits, stop strings, streaming.
struct Common {
  GenerationRequest request;
  bool stream = false, include_usage = false;
  bool max_tokens_given = false;
  bool ignore_eos = false; // an extension (as llama.cpp's): generate through EOS and end markers
  int n = 1;               // choices per prompt
  bool seed_given = false; // choice j of a prompt then samples with seed + j
};

// Choices (prompts x n) one request may ask for.
constexpr int kMaxChoices = 64;
// Stop strings a request may give (OpenAI takes 4; lm-evaluation-harness adds EOS to a task's).
constexpr size_t kMaxStops = 16;

// Log-probabilities: chat's "logprobs": true with "top_logprobs": 0..20 alternatives, or
// completions' "logprobs": 0..5 alternatives (false or null: none, as for chat).
int parse_logprobs(const json &body, bool chat) {
  const json *v = field(body, "logprobs");
  if (chat) {
    const bool want = boolean(body, "logprobs", false);
    const int64_t top = integer(body, "top_logprobs", -1, 0, 20);
    if (top >= 0 && !want)
      throw bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
    return want ? static_cast<int>(std::max<int64_t>(top, 0)) : -1;
  }
  if (field(body, "top_logprobs"))
    throw bad("top_logprobs", "'top_logprobs' is a chat completions field; /v1/completions "
                              "takes 'logprobs': N (0 to 5 alternatives)");
  if (!v || (v->is_boolean() && !v->get<bool>()))
    return -1;
  return static_cast<int>(integer(body, "logprobs", -1, 0, 5));
}

// response_format: null for text, else the grammar the reply is held to (json_mode.h).
std::shared_ptr<const JsonGrammar> response_format(const json &format) {
  const std::string type = format.is_object() && format.contains("type") &&
                                   format["type"].is_string()
                               ? format["type"].get<std::string>()
                               : "";
  if (type == "text")
    return nullptr;
  if (type == "json_object")
    return JsonGrammar::any_object();
  if (type != "json_schema")
    throw bad("response_format", "'response_format' must be {\"type\": \"text\"}, "
                                 "{\"type\": \"json_object\"} or {\"type\": \"json_schema\", "
                                 "\"json_schema\": {\"name\": ..., \"schema\": {...}}}");
  const json *spec = field(format, "json_schema");
  if (!spec || !spec->is_object())
    throw bad("response_format", "'response_format.json_schema' must be an object");
  const json *name = field(*spec, "name");
  if (!name || !name->is_string() || name->get<std::string>().empty() ||
      name->get<std::string>().size() > 64)
    throw bad("response_format", "'response_format.json_schema.name' must be a string of 1 to "
                                 "64 characters");
  boolean(*spec, "strict", false); // held to the schema either way (docs/serving.md)
  const json *schema = field(*spec, "schema");
  if (!schema)
    throw bad("response_format", "'response_format.json_schema.schema' is required");
  try {
    return JsonGrammar::from_schema(*schema);
  } catch (const JsonSchemaError &e) {
    throw bad("response_format", "response_format.json_schema.schema at '#" + e.where() +
                                     "': " + e.what());
  }
}

Common parse_common(const json &body, const ServerOptions &options, int vocab) {
  Common c;
  const json *model = field(body, "model");
  if (!model || !model->is_string())
    throw bad("model", "'model' is required and must be a string");
  if (model->get<std::string>() != options.model)
    throw ApiError{404,
                   "The model '" + model->get<std::string>() +
                       "' does not exist (this server has '" + options.model + "')",
                   "model", "model_not_found"};
  c.n = static_cast<int>(integer(body, "n", 1, 1, kMaxChoices));
  // What this server does not do is refused rather than silently ignored.
  for (const char *name : {"tools", "functions", "tool_choice", "function_call"})
    if (field(body, name))
      throw bad(name, std::string("'") + name + "' (tool calls) is not supported by this server");
  if (const json *suffix = field(body, "suffix"); suffix && !(suffix->is_string() &&
                                                             suffix->get<std::string>().empty()))
    throw bad("suffix", "'suffix' (text after the insertion) is not supported by this server");
  if (integer(body, "best_of", c.n, 1, kMaxChoices) != c.n)
    throw bad("best_of", "'best_of' other than n is not supported by this server");
  if (const json *format = field(body, "response_format"))
    c.request.json_format = response_format(*format);
  int64_t max_tokens = integer(body, "max_completion_tokens", -1, 1, 1 << 30);
  max_tokens = integer(body, "max_tokens", max_tokens, 1, 1 << 30);
  c.max_tokens_given = max_tokens > 0;
  c.request.max_tokens = max_tokens > 0 ? static_cast<int>(max_tokens) : 0;
  SamplingParams &s = c.request.sampling;
  s.temperature = static_cast<float>(number(body, "temperature", 1.0, 0.0, 2.0));
  s.top_p = static_cast<float>(number(body, "top_p", 1.0, 0.0, 1.0));
  // Extensions that vLLM and llama-server take too (the openai package sends them with
  // extra_body): top_k (0 or -1: off), min_p, and the repetition penalty under either's name.
  s.top_k = std::max(0, static_cast<int>(integer(body, "top_k", 0, -1, 1 << 30)));
  s.min_p = static_cast<float>(number(body, "min_p", 0.0, 0.0, 1.0));
  if (field(body, "repetition_penalty") && field(body, "repeat_penalty"))
    throw bad("repeat_penalty", "give one of 'repetition_penalty' and 'repeat_penalty' (the "
                                "same penalty, vLLM's name and llama.cpp's)");
  const char *penalty = field(body, "repeat_penalty") ? "repeat_penalty" : "repetition_penalty";
  s.repeat_penalty = static_cast<float>(number(body, penalty, 1.0, 0.01, 10.0));
  s.presence_penalty = static_cast<float>(number(body, "presence_penalty", 0.0, -2.0, 2.0));
  s.frequency_penalty = static_cast<float>(number(body, "frequency_penalty", 0.0, -2.0, 2.0));
  s.penalty_last_n = 0; // the whole reply (BatchEngine)
  c.seed_given = field(body, "seed") != nullptr;
  if (c.seed_given)
    s.seed = static_cast<uint64_t>(integer(body, "seed", 0, INT64_MIN, INT64_MAX));
  else
    s.seed = std::random_device{}();
  if (const json *stop = field(body, "stop")) {
    if (stop->is_string()) {
      c.request.stop_strings.push_back(stop->get<std::string>());
    } else if (stop->is_array() && stop->size() <= kMaxStops) {
      for (const json &item : *stop) {
        if (!item.is_string())
          throw bad("stop", "'stop' must be a string or an array of at most " +
                           std::to_string(kMaxStops) + " strings");
        c.request.stop_strings.push_back(item.get<std::string>());
      }
    } else {
      throw bad("stop", "'stop' must be a string or an array of at most " +
                           std::to_string(kMaxStops) + " strings");
    }
    for (const std::string &text : c.request.stop_strings)
      if (text.empty())
        throw bad("stop", "a stop string must not be empty");
  }
  if (const json *bias = field(body, "logit_bias")) {
    if (!bias->is_object())
      throw bad("logit_bias", "'logit_bias' must be an object of token id -> bias");
    for (auto it = bias->begin(); it != bias->end(); ++it) {
      char *end = nullptr;
      const long id = std::strtol(it.key().c_str(), &end, 10);
      if (it.key().empty() || *end != '\0' || id < 0 || id >= vocab)
        throw bad("logit_bias", "'logit_bias' keys must be token ids in [0, " +
                                    std::to_string(vocab) + "), got '" + it.key() + "'");
      if (!it->is_number() || !(it->get<double>() >= -100 && it->get<double>() <= 100))
        throw bad("logit_bias", "'logit_bias' values must be numbers in [-100, 100]");
      c.request.logit_bias.push_back({static_cast<int32_t>(id), it->get<float>()});
    }
  }
  c.ignore_eos = boolean(body, "ignore_eos", false);
  c.stream = boolean(body, "stream", false);
  if (const json *so = field(body, "stream_options")) {
    if (!so->is_object())
      throw bad("stream_options", "'stream_options' must be an object");
    c.include_usage = boolean(*so, "include_usage", false);
  }
  return c;
}

std::string message_text(const json &content, size_t index) {
  const std::string param = "messages[" + std::to_string(index) + "].content";
  if (content.is_null())
    return "";
  if (content.is_string())
    return content.get<std::string>();
  if (content.is_array()) {
    std::string text;
    for (const json &part : content) {
      if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
          !part["text"].is_string())
        throw bad(param,
                  "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported");
      text += part["text"].get<std::string>();
    }
    return text;
  }
  throw bad(param, "'content' must be a string or an array of text parts");
}

json usage_json(int prompt, int completion) {
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion}};
}

int64_t unix_time() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

class Api {
public:
  Api(const ModelInfo &info, const Tokenizer &tokenizer, const ServerOptions &options,
      const EngineFactory &make_engine)
      : options_(options), tokenizer_(tokenizer),
        format_(ChatFormat::from_template(tokenizer.chat_template(), notice_)),
        engine_(make_engine(engine_options(options))), vocab_(info.vocab) {
    chat_stops_ = format_.stop_ids(tokenizer);
    if (auto eos = tokenizer.eos())
      completion_stops_.push_back(*eos);
    created_ = unix_time();
  }

  static BatchOptions engine_options(const ServerOptions &o) {
    BatchOptions b;
    b.parallel = o.parallel;
    b.ctx_size = o.ctx_size;
    b.queue_size = o.queue_size;
    b.threads = o.threads;
    b.block_size = o.block_size;
    b.kv_blocks = o.kv_blocks;
    b.step_delay_ms = o.step_delay_ms;
    return b;
  }

  const std::string &notice() const { return notice_; }
  Engine &engine() { return *engine_; }

  void install(httplib::Server &server) {
    server.set_pre_routing_handler([this](const httplib::Request &req, httplib::Response &res) {
      if (options_.api_key.empty() || req.path.rfind("/v1/", 0) != 0)
        return httplib::Server::HandlerResponse::Unhandled;
      if (req.get_header_value("Authorization") == "Bearer " + options_.api_key)
        return httplib::Server::HandlerResponse::Unhandled;
      send_error(res, {401, "Incorrect API key provided", "", "invalid_api_key"});
      return httplib::Server::HandlerResponse::Handled;
    });
    server.Post("/v1/chat/completions", [this](const httplib::Request &req,
                                               httplib::Response &res) { handle(req, res, true); });
    server.Post("/v1/completions", [this](const httplib::Request &req, httplib::Response &res) {
      handle(req, res, false);
    });
    server.Get("/v1/models", [this](const httplib::Request &, httplib::Response &res) {
      json list = {{"object", "list"}, {"data", json::array({model_json()})}};
      res.set_content(list.dump(), "application/json");
    });
    server.Get(R"(/v1/models/(.+))", [this](const httplib::Request &req, httplib::Response &res) {
      if (req.matches[1] != options_.model)
        return send_error(res, {404, "The model '" + req.matches[1].str() + "' does not exist",
                                "model", "model_not_found"});
      res.set_content(model_json().dump(), "application/json");
    });
    server.Get("/health", [](const httplib::Request &, httplib::Response &res) {
      res.set_content(R"({"status":"ok"})", "application/json");
    });
    server.Get("/metrics", [this](const httplib::Request &, httplib::Response &res) {
      res.set_content(metrics_text(), "text/plain; version=0.0.4");
    });
    server.set_error_handler([](const httplib::Request &req, httplib::Response &res) {
      if (!res.body.empty())
        return;
      if (res.status == 404)
        send_error(res, {404, "Unknown route: " + req.method + " " + req.path, "", "not_found"});
      else if (res.status == 413)
        send_error(res, {413, "The request body is too large", "", "request_too_large"});
      else
        send_error(res, {res.status, "HTTP error " + std::to_string(res.status), "", ""});
    });
    server.set_exception_handler(
        [](const httplib::Request &, httplib::Response &res, std::exception_ptr ep) {
          std::string what = "internal error";
          try {
            std::rethrow_exception(ep);
          } catch (const std::exception &e) {
            what = e.what();
          } catch (...) {
          }
          send_error(res, {500, what, "", ""});
        });
  }

private:
  json model_json() const {
    return {{"id", options_.model}, {"object", "model"}, {"created", created_},
            {"owned_by", "phimoec"}};
  }

  std::string metrics_text() {
    BatchMetrics m = engine_->metrics();
    std::ostringstream out;
    auto metric = [&](const char *name, const char *type, const char *help, double value) {
      out << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n"
          << name << " " << value << "\n";
    };
    metric("phimoe_requests_total", "counter", "Completion requests accepted.",
           static_cast<double>(m.requests));
    metric("phimoe_requests_rejected_total", "counter", "Requests refused with 503 (queue full).",
           static_cast<double>(m.rejected));
    metric("phimoe_prompt_tokens_total", "counter", "Prompt tokens processed.",
           static_cast<double>(m.prompt_tokens));
    metric("phimoe_generated_tokens_total", "counter", "Tokens generated.",
           static_cast<double>(m.generated_tokens));
    metric("phimoe_tokens_per_second", "gauge",
           "Tokens generated per second over the last 10 seconds.", m.tokens_per_second);
    metric("phimoe_queue_depth", "gauge", "Requests waiting for a sequence slot or KV blocks.",
           m.queued);
    metric("phimoe_active_sequences", "gauge", "Sequences in the running batch.", m.active);
    metric("phimoe_kv_blocks_free", "gauge", "Free KV cache blocks.", m.free_blocks);
    metric("phimoe_kv_blocks_total", "gauge", "KV cache blocks in all.", m.total_blocks);
    metric("phimoe_preemptions_total", "counter",
           "Sequences sent back to the queue for lack of KV blocks (recomputed later).",
           static_cast<double>(m.preempted));
    metric("phimoe_batch_steps_total", "counter", "Batched forward passes.",
           static_cast<double>(m.steps));
    metric("phimoe_busy_seconds_total", "counter", "Seconds spent in batched steps.",
           m.busy_seconds);
    return out.str();
  }

  // A token as OpenAI's log-probabilities show it, from the bytes it adds to the reply: its
  // text, or where that is not whole UTF-8 (a byte of a character spelled by several tokens)
  // "bytes:" and its bytes as \xNN; and its bytes.
  static std::pair<std::string, json> token_text(const std::string &b) {
    json bytes = json::array();
    for (unsigned char c : b)
      bytes.push_back(c);
    if (tok::utf8_valid(b))
      return {b, bytes};
    std::string shown = "bytes:";
    for (unsigned char c : b) {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      shown += hex;
    }
    return {shown, bytes};
  }

  // The "logprobs" of a choice (or of a streamed chunk) with `entries`: chat's {"content":
  // [{token, logprob, bytes, top_logprobs}]}, or completions' {tokens, token_logprobs,
  // top_logprobs (a token -> logprob object each), text_offset (in characters of the reply,
  // which `reply` holds at least up to these tokens)}.
  // Where text offsets count from in a reply: its first `at` bytes hold `chars` characters
  // (code points: UTF-8 lead bytes). A stream keeps one a choice, so that each chunk counts on
  // from the last.
  struct TextCursor {
    size_t at = 0, chars = 0;
  };

  json logprobs_json(const std::vector<TokenLogprob> &entries, bool chat, const std::string &reply,
                     const std::vector<int32_t> &stop_ids, TextCursor &cursor) const {
    // The bytes a token adds to the reply, where entry `e` stands. A reply that starts a text of
    // its own (after a chat prompt's <|assistant|>) drops the leading space of its first word,
    // and so do the tokens that could have begun it.
    auto bytes_at = [&](const TokenLogprob &e, int32_t id) {
      std::string b = tokenizer_.token_bytes(id);
      if (e.text_offset == 0 && !b.empty() && b[0] == ' ' && (reply.empty() || reply[0] != ' '))
        b.erase(0, 1);
      return b;
    };
    if (chat) {
      json content = json::array();
      for (const TokenLogprob &e : entries) {
        if (std::find(stop_ids.begin(), stop_ids.end(), e.id) != stop_ids.end())
          continue; // the end marker: not part of the message
        auto [token, bytes] = token_text(bytes_at(e, e.id));
        json top = json::array();
        for (auto [id, logprob] : e.top) {
          auto [t, b] = token_text(bytes_at(e, id));
          top.push_back({{"token", t}, {"logprob", logprob}, {"bytes", b}});
        }
        content.push_back({{"token", token}, {"logprob", e.logprob}, {"bytes", bytes},
                           {"top_logprobs", top}});
      }
      return {{"content", content}, {"refusal", nullptr}};
    }
    json tokens = json::array(), token_logprobs = json::array(), tops = json::array(),
         offsets = json::array();
    for (const TokenLogprob &e : entries) {
      tokens.push_back(token_text(bytes_at(e, e.id)).first);
      token_logprobs.push_back(e.scored ? json(e.logprob) : json(nullptr));
      json top = json::object();
      for (auto [id, logprob] : e.top)
        top[token_text(bytes_at(e, id)).first] = logprob;
      tops.push_back(e.scored ? top : json(nullptr));
      for (; cursor.at < std::min(e.text_offset, reply.size()); ++cursor.at)
        cursor.chars += (static_cast<unsigned char>(reply[cursor.at]) & 0xC0) != 0x80;
      offsets.push_back(cursor.chars);
    }
    return {{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", tops},
            {"text_offset", offsets}};
  }

  // The prompts of a /v1/completions body: a string, token ids, or an array of strings or of
  // token-id arrays (a choice, or n, for each, in order).
  std::vector<std::vector<int32_t>> completion_prompts(const json &body) {
    const json *prompt = field(body, "prompt");
    if (!prompt)
      throw bad("prompt", "'prompt' is required");
    auto ids_of = [&](const json &p) {
      std::vector<int32_t> ids;
      for (const json &id : p) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= vocab_)
          throw bad("prompt", "token ids must be integers in [0, " + std::to_string(vocab_) + ")");
        ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
      }
      return ids;
    };
    const char *shape = "'prompt' must be a string, token ids, or an array of strings or of "
                        "token-id arrays";
    std::vector<std::vector<int32_t>> prompts;
    if (prompt->is_string()) {
      prompts.push_back(tokenizer_.encode(prompt->get<std::string>(), true));
    } else if (prompt->is_array() && !prompt->empty() &&
               ((*prompt)[0].is_string() || (*prompt)[0].is_array())) {
      for (const json &p : *prompt) {
        if (p.is_string())
          prompts.push_back(tokenizer_.encode(p.get<std::string>(), true));
        else if (p.is_array() && !p.empty())
          prompts.push_back(ids_of(p));
        else
          throw bad("prompt", shape);
      }
    } else if (prompt->is_array() && !prompt->empty()) {
      prompts.push_back(ids_of(*prompt));
    } else {
      throw bad("prompt", shape);
    }
    return prompts;
  }

  std::vector<int32_t> chat_prompt(const json &body) {
    const json *messages = field(body, "messages");
    if (!messages || !messages->is_array() || messages->empty())
      throw bad("messages", "'messages' is required and must be a non-empty array");
    std::vector<ChatMessage> chat;
    for (size_t i = 0; i < messages->size(); ++i) {
      const json &m = (*messages)[i];
      const std::string param = "messages[" + std::to_string(i) + "]";
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
        throw bad(param + ".role", "each message needs a string 'role'");
      std::string role = m["role"].get<std::string>();
      if (role == "developer")
        role = "system";
      if (role != "system" && role != "user" && role != "assistant")
        throw bad(param + ".role", "unsupported role '" + role +
                                       "' (system, developer, user or assistant)");
      chat.push_back({role, message_text(m.contains("content") ? m["content"] : json(nullptr), i)});
    }
    return tokenizer_.encode(format_.render(chat, true), true);
  }

  // The choices of one request: a stream each (prompt p's j-th of n at index p * n + j).
  struct Choices {
    std::vector<std::shared_ptr<GenerationStream>> streams;
    int prompt_tokens = 0; // each prompt counted once
    bool logprobs = false;
    std::vector<int32_t> stop_ids;
    void cancel() {
      for (auto &s : streams)
        s->cancel();
    }
  };

  void handle(const httplib::Request &req, httplib::Response &res, bool chat) {
    json body;
    try {
      body = json::parse(req.body);
    } catch (const json::parse_error &e) {
      return send_error(res, {400, std::string("The body is not valid JSON: ") + e.what(), "",
                              "invalid_json"});
    }
    auto choices = std::make_shared<Choices>();
    Common c;
    try {
      if (!body.is_object())
        throw ApiError{400, "The body must be a JSON object", "", "invalid_json"};
      c = parse_common(body, options_, vocab_);
      c.request.logprobs = parse_logprobs(body, chat);
      c.request.echo = boolean(body, "echo", false);
      if (chat && c.request.echo)
        throw bad("echo", "'echo' is a completions field (/v1/completions)");
      std::vector<std::vector<int32_t>> prompts;
      if (chat)
        prompts.push_back(chat_prompt(body));
      else
        prompts = completion_prompts(body);
      const char *param = chat ? "messages" : "prompt";
      if (prompts.size() * static_cast<size_t>(c.n) > static_cast<size_t>(kMaxChoices))
        throw bad(prompts.size() > 1 ? "prompt" : "n",
                  "at most " + std::to_string(kMaxChoices) + " choices (prompts x n) a request");
      for (const std::vector<int32_t> &prompt : prompts) {
        if (prompt.empty())
          throw bad(param, "the prompt is empty");
        const int tokens = static_cast<int>(prompt.size());
        if (tokens >= options_.ctx_size)
          throw ApiError{413,
                         "The prompt is " + std::to_string(tokens) +
                             " tokens; this server's context is " +
                             std::to_string(options_.ctx_size) + " tokens (--ctx-size)",
                         param, "context_length_exceeded"};
        choices->prompt_tokens += tokens;
      }
      if (!c.max_tokens_given)
        c.request.max_tokens = chat ? options_.ctx_size : 16;
      if (!c.ignore_eos)
        c.request.stop_ids = chat ? chat_stops_ : completion_stops_;
      c.request.reply_alone = chat && format_.reply_stands_alone();
      choices->logprobs = c.request.logprobs >= 0;
      choices->stop_ids = c.request.stop_ids;
      for (const std::vector<int32_t> &prompt : prompts)
        for (int j = 0; j < c.n; ++j) {
          GenerationRequest request = c.request;
          request.prompt = prompt;
          if (j > 0)
            request.sampling.seed = c.seed_given ? c.request.sampling.seed + j
                                                 : std::random_device{}();
          Engine::Refusal why;
          auto stream = engine_->submit(std::move(request), why);
          if (!stream) {
            choices->cancel();
            if (why == Engine::Refusal::QueueFull)
              throw ApiError{503, "The server is busy: the request queue is full; retry later",
                             "", "queue_full"};
            if (why == Engine::Refusal::Stopped)
              throw ApiError{503, "The server is shutting down", "", "shutting_down"};
            throw ApiError{413, "The prompt does not fit the context", "",
                           "context_length_exceeded"};
          }
          choices->streams.push_back(std::move(stream));
        }
    } catch (const ApiError &e) {
      return send_error(res, e);
    }
    const std::string id = (chat ? "chatcmpl-" : "cmpl-") + std::to_string(++next_id_);
    const int64_t created = unix_time();
    if (c.stream)
      return stream_response(res, choices, chat, id, created, c.include_usage);

    json list = json::array();
    int completion_tokens = 0;
    for (size_t i = 0; i < choices->streams.size(); ++i) {
      std::string text;
      std::vector<TokenLogprob> logprobs;
      GenerationStream::Chunk chunk;
      while (true) {
        if (!choices->streams[i]->next(chunk, 1000))
          continue;
        text += chunk.text;
        for (TokenLogprob &entry : chunk.logprobs)
          logprobs.push_back(std::move(entry));
        if (chunk.done)
          break;
      }
      if (!chunk.error.empty()) {
        choices->cancel();
        return send_error(res, {503, chunk.error, "", "server_error"});
      }
      completion_tokens += chunk.completion_tokens;
      TextCursor cursor;
      json choice = {{"index", i},
                     {"logprobs", choices->logprobs
                                      ? logprobs_json(logprobs, chat, text, choices->stop_ids,
                                                      cursor)
                                      : json(nullptr)},
                     {"finish_reason", chunk.finish_reason}};
      if (chat)
        choice["message"] = {{"role", "assistant"}, {"content", text}};
      else
        choice["text"] = text;
      list.push_back(std::move(choice));
    }
    json out = {{"id", id},
                {"object", chat ? "chat.completion" : "text_completion"},
                {"created", created},
                {"model", options_.model},
                {"choices", list},
                {"usage", usage_json(choices->prompt_tokens, completion_tokens)}};
    res.set_content(dump(out), "application/json");
  }

  // Server-sent events: a chunk per piece of text of a choice (its index says which), each
  // choice's finish reason, usage when asked, then "data: [DONE]". A client that goes away
  // cancels its sequences.
  void stream_response(httplib::Response &res, std::shared_ptr<Choices> choices, bool chat,
                       const std::string &id, int64_t created, bool include_usage) {
    struct State {
      bool started = false;
      std::vector<std::string> text;     // each choice's reply so far (for text offsets)
      std::vector<TextCursor> cursor;    // and how far its offsets have counted
      std::vector<bool> done;
      int completion_tokens = 0;
    };
    auto state = std::make_shared<State>();
    state->text.resize(choices->streams.size());
    state->cursor.resize(choices->streams.size());
    state->done.assign(choices->streams.size(), false);
    auto chunk_json = [this, chat, id, created](size_t index, const json &delta_or_text,
                                                const json &finish_reason,
                                                const json &logprobs = nullptr) {
      json choice = {{"index", index}, {"logprobs", logprobs}, {"finish_reason", finish_reason}};
      if (chat)
        choice["delta"] = delta_or_text;
      else
        choice["text"] = delta_or_text;
      return json{{"id", id},
                  {"object", chat ? "chat.completion.chunk" : "text_completion"},
                  {"created", created},
                  {"model", options_.model},
                  {"choices", json::array({choice})}};
    };
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [choices, state, chunk_json, chat, include_usage, this, id,
         created](size_t, httplib::DataSink &sink) {
          auto send = [&](const json &event) {
            const std::string data = "data: " + dump(event) + "\n\n";
            return sink.write(data.data(), data.size());
          };
          const size_t count = choices->streams.size();
          if (!state->started) {
            state->started = true;
            for (size_t i = 0; chat && i < count; ++i)
              if (!send(chunk_json(i, {{"role", "assistant"}, {"content", ""}}, nullptr))) {
                choices->cancel();
                return false;
              }
          }
          // What every unfinished choice has now; when none has anything, a wait on the first.
          // take(): false when the stream must end (the client went away, or an error).
          bool any = false, ended = false;
          auto take = [&](size_t i, int timeout_ms) {
            GenerationStream::Chunk chunk;
            if (!choices->streams[i]->next(chunk, timeout_ms))
              return true;
            any = true;
            std::string &text = state->text[i];
            text += chunk.text;
            if (!chunk.text.empty() || (choices->logprobs && !chunk.logprobs.empty())) {
              const json piece = chat ? json{{"content", chunk.text}} : json(chunk.text);
              const json logprobs =
                  choices->logprobs ? logprobs_json(chunk.logprobs, chat, text, choices->stop_ids,
                                                    state->cursor[i])
                                    : json(nullptr);
              if (!send(chunk_json(i, piece, nullptr, logprobs)))
                return false;
            }
            if (!chunk.done)
              return true;
            if (!chunk.error.empty()) {
              send(error_json({503, chunk.error, "", "server_error"}));
              ended = true;
              return false;
            }
            state->done[i] = true;
            state->completion_tokens += chunk.completion_tokens;
            return send(chunk_json(i, chat ? json::object() : json(""), chunk.finish_reason));
          };
          bool ok = true;
          for (size_t i = 0; ok && i < count; ++i)
            if (!state->done[i])
              ok = take(i, 0);
          for (size_t i = 0; ok && !any && i < count; ++i)
            if (!state->done[i]) {
              ok = take(i, 200);
              break;
            }
          if (!ok) {
            choices->cancel();
            if (!ended)
              return false;
            static const std::string done = "data: [DONE]\n\n";
            sink.write(done.data(), done.size());
            sink.done();
            return true;
          }
          if (!any) {
            if (!sink.is_writable()) {
              choices->cancel();
              return false;
            }
            return true;
          }
          if (std::find(state->done.begin(), state->done.end(), false) != state->done.end())
            return true;
          if (include_usage) {
            json usage = {{"id", id},
                          {"object", chat ? "chat.completion.chunk" : "text_completion"},
                          {"created", created},
                          {"model", options_.model},
                          {"choices", json::array()},
                          {"usage", usage_json(choices->prompt_tokens, state->completion_tokens)}};
            send(usage);
          }
          static const std::string done = "data: [DONE]\n\n";
          sink.write(done.data(), done.size());
          sink.done();
          return true;
        },
        [choices](bool) { choices->cancel(); });
  }

  const ServerOptions &options_;
  const Tokenizer &tokenizer_;
  std::string notice_;
  ChatFormat format_;
  std::unique_ptr<Engine> engine_;
  int vocab_;
  std::vector<int32_t> chat_stops_, completion_stops_;
  int64_t created_ = 0;
  std::atomic<uint64_t> next_id_{0};
};

} // namespace

int run_server(const ModelInfo &info, const Tokenizer &tokenizer, const ServerOptions &options,
               const EngineFactory &make_engine) {
  // SIGINT and SIGTERM go to one thread that stops the server; every other thread (the
  // engine's, httplib's) inherits the blocked mask. Writes to a closed socket fail
  // instead of killing the process.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  Api api(info, tokenizer, options, make_engine);
  if (!api.notice().empty())
    std::fprintf(stderr, "phimoe-bin: %s\n", api.notice().c_str());
  if (api.engine().options().parallel < options.parallel)
    std::fprintf(stderr,
                 "phimoe-bin: --parallel %d: this model runs at most %d rows per forward; "
                 "serving %d sequences at once\n",
                 options.parallel, info.max_tokens, api.engine().options().parallel);
  httplib::Server server;
  const size_t workers = static_cast<size_t>(options.parallel + options.queue_size) + 32;
  server.new_task_queue = [workers] { return new httplib::ThreadPool(workers); };
  server.set_payload_max_length(size_t{64} << 20);
  server.set_tcp_nodelay(true); // each streamed token goes out at once (no Nagle delay)
  api.install(server);

  int port = options.port;
  if (port == 0) {
    port = server.bind_to_any_port(options.host);
    if (port < 0)
      port = 0;
  } else if (!server.bind_to_port(options.host, port)) {
    port = 0;
  }
  if (port == 0) {
    std::fprintf(stderr, "phimoe-bin: error: cannot listen on %s:%d\n", options.host.c_str(),
                 options.port);
    api.engine().stop();
    return 1;
  }

  std::atomic<bool> listening{true};
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    if (listening)
      std::fprintf(stderr, "phimoe-bin: %s: stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    api.engine().stop(); // in-flight requests end (with an error), streams close
    server.stop();
  });
  std::fprintf(stderr,
               "phimoe-bin: listening on http://%s:%d (model '%s', %d parallel, context %d)\n",
               options.host.c_str(), port, options.model.c_str(),
               api.engine().options().parallel, options.ctx_size);
  std::fflush(stderr);
  const bool ok = server.listen_after_bind();
  listening = false;
  // Wake the waiter if listening ended by itself (after a signal it has returned already).
  pthread_kill(waiter.native_handle(), SIGTERM);
  waiter.join();
  api.engine().stop();
  std::fprintf(stderr, "phimoe-bin: stopped\n");
  return ok ? 0 : 1;
}

} // namespace phimoe_rt
