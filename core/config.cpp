// Config schema: reads, overrides, validates and prints the TOML config of core/config.h.
//
// One table of field descriptors (config_fields() and route_fields()) drives everything: each
// entry names a key ("train.steps", spelled exactly as the C++ member), how its TOML value is
// read and printed, what values are allowed (as text for messages and printed comments) and a
// predicate that checks them. Loading walks the parsed TOML table against that list, printing
// walks the list, and validate() runs the predicates; so a key added to config.h needs one line
// here, and docs/config.md a row.
//
//   parse_config(text, "configs/x.toml", {"train.steps=10"})
//     1. toml::parse                       (syntax errors name file:line:column)
//     2. apply the overrides to the table  (their errors name the source "--set")
//     3. walk the table into a Config      (unknown keys with a suggestion, wrong types)
//     4. check every value                 (ranges, allowed words, route order)
#include "core/config.h"

#include <toml++/toml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <sstream>
#include <type_traits>
#include <utility>

namespace nt {
namespace {

// An error about one key: `key` is its full dotted name ("model.routes[1].end_layer"), used to
// tell whether it came from the file or from an override; `text` is the message.
struct KeyError {
  std::string key;
  std::string text;
};

// ============================================================================================
// Text helpers
// ============================================================================================

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// A TOML basic string: "..." with the escapes TOML requires.
std::string quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char ch : s) {
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\t': out += "\\t"; break;
      case '\n': out += "\\n"; break;
      case '\f': out += "\\f"; break;
      case '\r': out += "\\r"; break;
      default:
        if (ch < 0x20 || ch == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", ch);
          out += buf;
        } else {
          out += static_cast<char>(ch);
        }
    }
  }
  return out + "\"";
}

// The shortest text that parses back to exactly v, always a TOML float ("4.0", "1e-4", "nan").
std::string format_double(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  std::string s(buf, res.ptr);
  size_t e = s.find('e');
  if (e == std::string::npos) {
    if (s.find('.') == std::string::npos) s += ".0";
    return s;
  }
  // "1e-04" -> "1e-4": drop the exponent's leading zeros (TOML allows them; people do not).
  std::string mant = s.substr(0, e), exp = s.substr(e + 1), sign;
  if (!exp.empty() && (exp[0] == '-' || exp[0] == '+')) {
    if (exp[0] == '-') sign = "-";
    exp = exp.substr(1);
  }
  size_t nz = exp.find_first_not_of('0');
  exp = nz == std::string::npos ? "0" : exp.substr(nz);
  return mant + "e" + sign + exp;
}

// "string \"abc\"", "integer 5", "float 1.5", "array [1, 2]": what a TOML node holds, for
// "got ..." in messages.
std::string describe(const toml::node& n) {
  std::ostringstream os;
  switch (n.type()) {
    case toml::node_type::string: os << "string " << quote(n.as_string()->get()); break;
    case toml::node_type::integer: os << "integer " << n.as_integer()->get(); break;
    case toml::node_type::floating_point:
      os << "float " << format_double(n.as_floating_point()->get());
      break;
    case toml::node_type::boolean: os << "boolean " << (n.as_boolean()->get() ? "true" : "false"); break;
    case toml::node_type::array: os << "array " << *n.as_array(); break;
    case toml::node_type::table: os << "a table"; break;
    case toml::node_type::date: os << "date " << *n.as_date(); break;
    case toml::node_type::time: os << "time " << *n.as_time(); break;
    case toml::node_type::date_time: os << "date-time " << *n.as_date_time(); break;
    default: os << "nothing"; break;
  }
  std::string s = os.str();
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

// Edit distance with adjacent transpositions ("stpes" -> "steps" is 1).
size_t edit_distance(const std::string& a, const std::string& b) {
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[n][m];
}

std::string leaf_of(const std::string& key) {
  size_t dot = key.rfind('.');
  return dot == std::string::npos ? key : key.substr(dot + 1);
}

// The valid keys closest to `wrong`: "train.stpes" -> train.steps; a key put in the wrong
// section ("train.lr") -> optim.lr; a shortened one ("train.batch") -> train.global_batch.
std::vector<std::string> closest_keys(const std::string& wrong,
                                      const std::vector<std::string>& candidates) {
  const std::string wleaf = leaf_of(wrong);
  size_t best = std::numeric_limits<size_t>::max();
  std::vector<std::string> out;
  for (const std::string& c : candidates) {
    const std::string cleaf = leaf_of(c);
    size_t score = edit_distance(wrong, c);
    score = std::min(score, edit_distance(wleaf, cleaf) + (wleaf == wrong ? 0 : 2));
    if (wleaf.size() >= 3 && cleaf.find(wleaf) != std::string::npos)
      score = std::min<size_t>(score, 2);
    if (score < best) {
      best = score;
      out.clear();
    }
    if (score == best) out.push_back(c);
  }
  if (best > 2 + wleaf.size() / 4) out.clear();
  if (out.size() > 3) out.clear();
  return out;
}

std::string join(const std::vector<std::string>& v, const std::string& sep,
                 const std::string& last_sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i > 0) s += i + 1 == v.size() ? last_sep : sep;
    s += v[i];
  }
  return s;
}

// ============================================================================================
// Codecs: one per C++ member type -- read a TOML node (type checked), print a TOML value
// ============================================================================================

[[noreturn]] void type_error(const std::string& key, const char* expected, const toml::node& n) {
  throw KeyError{key, "key '" + key + "' must be " + expected + ", got " + describe(n)};
}

template <class T>
struct Codec;

template <>
struct Codec<int64_t> {
  static void read(const toml::node& n, const std::string& key, int64_t& out) {
    if (!n.is_integer()) type_error(key, "an integer", n);
    out = n.as_integer()->get();
  }
  static std::string print(int64_t v) { return std::to_string(v); }
};

template <>
struct Codec<int> {
  static void read(const toml::node& n, const std::string& key, int& out) {
    if (!n.is_integer()) type_error(key, "an integer", n);
    int64_t v = n.as_integer()->get();
    if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
      type_error(key, "an integer in [-2147483648, 2147483647]", n);
    out = static_cast<int>(v);
  }
  static std::string print(int v) { return std::to_string(v); }
};

template <>
struct Codec<double> {  // an integer is taken where a float is expected
  static void read(const toml::node& n, const std::string& key, double& out) {
    if (n.is_floating_point()) {
      out = n.as_floating_point()->get();
    } else if (n.is_integer()) {
      out = static_cast<double>(n.as_integer()->get());
    } else {
      type_error(key, "a number", n);
    }
  }
  static std::string print(double v) { return format_double(v); }
};

template <>
struct Codec<bool> {
  static void read(const toml::node& n, const std::string& key, bool& out) {
    if (!n.is_boolean()) type_error(key, "true or false", n);
    out = n.as_boolean()->get();
  }
  static std::string print(bool v) { return v ? "true" : "false"; }
};

template <>
struct Codec<std::string> {
  static void read(const toml::node& n, const std::string& key, std::string& out) {
    if (!n.is_string()) type_error(key, "a string", n);
    out = n.as_string()->get();
  }
  static std::string print(const std::string& v) { return quote(v); }
};

template <class E>
struct Codec<std::vector<E>> {  // arrays check each element: key 'optim.betas[1]'
  static void read(const toml::node& n, const std::string& key, std::vector<E>& out) {
    if (!n.is_array()) {
      type_error(key, std::is_same_v<E, double> ? "an array of numbers" : "an array of strings", n);
    }
    const toml::array& arr = *n.as_array();
    std::vector<E> v(arr.size());
    for (size_t i = 0; i < arr.size(); ++i)
      Codec<E>::read(arr[i], key + "[" + std::to_string(i) + "]", v[i]);
    out = std::move(v);
  }
  static std::string print(const std::vector<E>& v) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + Codec<E>::print(v[i]);
    return s + "]";
  }
};

// ============================================================================================
// Field descriptors
// ============================================================================================

// One key of Owner (Config, or RouteConfig for the keys of a [[model.routes]] entry).
template <class Owner>
struct Field {
  std::string key;      // "train.steps" (Config) or "start_layer" (RouteConfig)
  std::string allowed;  // "" = any value of the type; else what is allowed, e.g. ">= 1"
  bool is_string = false;  // an override with a bare value sets it as text
  std::function<void(Owner&, const toml::node&, const std::string& full_key)> read;
  std::function<std::string(const Owner&)> print;
  std::function<bool(const Owner&)> ok;  // the value is allowed
};

template <class T>
bool finite_value(const T& v) {
  if constexpr (std::is_same_v<T, double>) {
    return std::isfinite(v);
  } else if constexpr (std::is_same_v<T, std::vector<double>>) {
    return std::all_of(v.begin(), v.end(), [](double x) { return std::isfinite(x); });
  } else {
    return true;
  }
}

// get(owner) -> the member (const or not); pred(value) -> allowed. Floats must also be finite.
template <class Owner, class T, class Get, class Pred>
Field<Owner> make_field(std::string key, Get get, std::string allowed, Pred pred) {
  Field<Owner> f;
  f.key = std::move(key);
  if (allowed.empty() && (std::is_same_v<T, double> || std::is_same_v<T, std::vector<double>>))
    allowed = "a finite number";
  f.allowed = std::move(allowed);
  f.is_string = std::is_same_v<T, std::string>;
  f.read = [get](Owner& o, const toml::node& n, const std::string& full_key) {
    Codec<T>::read(n, full_key, get(o));
  };
  f.print = [get](const Owner& o) { return Codec<T>::print(get(o)); };
  f.ok = [get, pred](const Owner& o) { return finite_value<T>(get(o)) && pred(get(o)); };
  return f;
}

template <class S, class T, class Pred>
Field<Config> config_field(std::string key, S Config::*sec, T S::*mem, std::string allowed,
                           Pred pred) {
  auto get = [sec, mem](auto& c) -> auto& { return (c.*sec).*mem; };
  return make_field<Config, T>(std::move(key), get, std::move(allowed), pred);
}

template <class T, class Pred>
Field<RouteConfig> route_field(std::string key, T RouteConfig::*mem, std::string allowed,
                               Pred pred) {
  auto get = [mem](auto& r) -> auto& { return r.*mem; };
  return make_field<RouteConfig, T>(std::move(key), get, std::move(allowed), pred);
}

// The key is the stringified member name, so TOML keys are exactly the C++ member names.
#define NT_FIELD(sec, mem, allowed, pred) \
  config_field(#sec "." #mem, &Config::sec, &decltype(Config::sec)::mem, allowed, pred)
#define NT_ROUTE_FIELD(mem, allowed, pred) route_field(#mem, &RouteConfig::mem, allowed, pred)

// ---- predicates ----------------------------------------------------------------------------
const auto any = [](const auto&) { return true; };
template <class N>
auto ge(N lo) {
  return [lo](const auto& v) { return v >= lo; };
}
template <class N>
auto gt(N lo) {
  return [lo](const auto& v) { return v > lo; };
}
auto one_of(std::vector<std::string> words) {
  return [words](const std::string& v) {
    return std::find(words.begin(), words.end(), v) != words.end();
  };
}
const auto non_empty = [](const auto& v) { return !v.empty(); };

const std::vector<Field<Config>>& config_fields() {
  static const std::vector<Field<Config>> fields = {
      NT_FIELD(run, name, "a non-empty name without '/'",
               [](const std::string& v) { return !v.empty() && v.find('/') == std::string::npos; }),
      NT_FIELD(run, dir, "a non-empty folder", non_empty),
      NT_FIELD(run, seed, "", any),

      NT_FIELD(model, name, "a model zoo name, e.g. \"DiT-XL/2\"", non_empty),
      NT_FIELD(model, input_size, "> 0", gt(0)),
      NT_FIELD(model, in_channels, "> 0", gt(0)),
      NT_FIELD(model, num_classes, ">= 0 (0 = unconditional)", ge(0)),
      NT_FIELD(model, depth, ">= 0 (0 = from the zoo name)", ge(0)),
      NT_FIELD(model, hidden_size, ">= 0 (0 = from the zoo name)", ge(0)),
      NT_FIELD(model, num_heads, ">= 0 (0 = from the zoo name)", ge(0)),
      NT_FIELD(model, patch_size, ">= 0 (0 = from the zoo name)", ge(0)),
      NT_FIELD(model, mlp_ratio, "> 0", gt(0.0)),
      NT_FIELD(model, init, "\"adaln_zero\" or \"reference\"", one_of({"adaln_zero", "reference"})),
      // model.routes: an array of tables with the keys of route_fields(), handled apart.

      NT_FIELD(diffusion, P_mean, "", any),
      NT_FIELD(diffusion, P_std, "> 0", gt(0.0)),
      NT_FIELD(diffusion, sigma_data, "> 0", gt(0.0)),
      NT_FIELD(diffusion, class_drop_prob, "in [0, 1]",
               [](double v) { return v >= 0.0 && v <= 1.0; }),

      NT_FIELD(data, paths, "HDF5 file paths (non-empty strings)",
               [](const std::vector<std::string>& v) {
                 return std::none_of(v.begin(), v.end(),
                                     [](const std::string& p) { return p.empty(); });
               }),
      NT_FIELD(data, prefetch_threads, ">= 1", ge(1)),
      NT_FIELD(data, prefetch_depth, ">= 1", ge(1)),

      NT_FIELD(train, global_batch, ">= 1", ge(1)),
      NT_FIELD(train, micro_batch, ">= 0 (0 = a rank's whole share of the global batch)", ge(0)),
      NT_FIELD(train, steps, ">= 0", ge(0)),
      NT_FIELD(train, precision, "\"fp32\" or \"bf16\"", one_of({"fp32", "bf16"})),
      NT_FIELD(train, grad_clip, ">= 0 (0 = off)", ge(0.0)),
      NT_FIELD(train, log_every, ">= 1", ge(1)),
      NT_FIELD(train, device, "\"auto\", \"cpu\" or \"cuda\"", one_of({"auto", "cpu", "cuda"})),
      NT_FIELD(train, threads, ">= 0 (0 = LibTorch's default)", ge(0)),
      NT_FIELD(train, rank_metrics, "", any),
      NT_FIELD(train, watchdog_s, ">= 0 (0 = off)", ge(0.0)),
      NT_FIELD(train, recompute, "\"none\", \"norm\", \"mlp\", \"norm+mlp\" or \"blocks\"",
               one_of({"none", "norm", "mlp", "norm+mlp", "blocks"})),
      NT_FIELD(train, recompute_blocks, ">= -1 (-1 = every block)", ge(-1)),
      NT_FIELD(train, fused_kernels, "", any),
      NT_FIELD(train, fused_mlp, "", any),
      NT_FIELD(train, attention, "\"auto\", \"cudnn\", \"flash\", \"efficient\", \"math\" or \"fused\"",
               one_of({"auto", "cudnn", "flash", "efficient", "math", "fused"})),
      NT_FIELD(train, product_forms, "\"direct\" or \"tall\"", one_of({"direct", "tall"})),
      NT_FIELD(train, weight_grads_in_place, "", any),
      NT_FIELD(train, fp32_attention, "\"products\", \"sdpa\" or \"fused\"", one_of({"products", "sdpa", "fused"})),
      NT_FIELD(train, blas, "\"auto\", \"cublas\" or \"cublaslt\"", one_of({"auto", "cublas", "cublaslt"})),

      NT_FIELD(optim, lr, ">= 0", ge(0.0)),
      NT_FIELD(optim, betas, "two numbers in [0, 1)",
               [](const std::vector<double>& v) {
                 return v.size() == 2 && std::all_of(v.begin(), v.end(), [](double b) {
                          return b >= 0.0 && b < 1.0;
                        });
               }),
      NT_FIELD(optim, eps, "> 0", gt(0.0)),
      NT_FIELD(optim, weight_decay, ">= 0", ge(0.0)),
      NT_FIELD(optim, warmup_steps, ">= 0", ge(0)),

      NT_FIELD(ema, decay, "in [0, 1]", [](double v) { return v >= 0.0 && v <= 1.0; }),

      NT_FIELD(checkpoint, every, ">= 0 (0 = only at the end)", ge(0)),
      NT_FIELD(checkpoint, keep_last, ">= 1", ge(1)),
      NT_FIELD(checkpoint, keep_every, ">= 0 (0 = none kept for good)", ge(0)),
      NT_FIELD(checkpoint, resume, "\"auto\", \"never\" or a checkpoint folder", non_empty),
      NT_FIELD(checkpoint, init_from, "\"\" or a safetensors file", any),

      NT_FIELD(dist, reshard_after_forward, "", any),
      NT_FIELD(dist, param_dtype, "\"fp32\" or \"bf16\"", one_of({"fp32", "bf16"})),
      NT_FIELD(dist, reduce_dtype, "\"fp32\" or \"bf16\"", one_of({"fp32", "bf16"})),

      NT_FIELD(eval, ranks, ">= 0", ge(0)),
      NT_FIELD(eval, num_samples, ">= 0", ge(0)),
      NT_FIELD(eval, seeds, "a list of seeds like \"0-63\" or \"1,5,7-9\"",
               [](const std::string& v) {
                 try {
                   parse_int_list(v);
                   return true;
                 } catch (const ConfigError&) {
                   return false;
                 }
               }),
      NT_FIELD(eval, steps, ">= 2 (the Heun sampler's first and last steps)", ge(2)),
      NT_FIELD(eval, S_churn, ">= 0 (0 = the deterministic sampler)", ge(0.0)),
      NT_FIELD(eval, cfg_scales, "a non-empty array of numbers", non_empty),
      NT_FIELD(eval, ref_stats, "a .npz file with mu, sigma (\"\" = none)", any),
      NT_FIELD(eval, extractor, "\"inception\" or \"classifier\"",
               one_of({"inception", "classifier"})),
      NT_FIELD(eval, extractor_weights, "a .safetensors file (\"\" = none)", any),
      NT_FIELD(eval, vae_weights, "a .safetensors file (\"\" = none)", any),
  };
  return fields;
}

const std::vector<Field<RouteConfig>>& route_fields() {
  static const std::vector<Field<RouteConfig>> fields = {
      NT_ROUTE_FIELD(selection_ratio, "in [0, 1)", [](double v) { return v >= 0.0 && v < 1.0; }),
      NT_ROUTE_FIELD(start_layer, ">= 0", ge(0)),
      NT_ROUTE_FIELD(end_layer, ">= start_layer", any),  // checked with the route, below
      NT_ROUTE_FIELD(x_T, "", any),
      NT_ROUTE_FIELD(x_D_last, "", any),
  };
  return fields;
}

#undef NT_FIELD
#undef NT_ROUTE_FIELD

const char* const kRoutesKey = "model.routes";

std::string section_of(const std::string& key) { return key.substr(0, key.find('.')); }

// Sections in print order: [run], [model], ..., [eval].
const std::vector<std::string>& sections() {
  static const std::vector<std::string> out = [] {
    std::vector<std::string> s;
    for (const auto& f : config_fields())
      if (s.empty() || s.back() != section_of(f.key)) s.push_back(section_of(f.key));
    return s;
  }();
  return out;
}

bool is_section(const std::string& s) {
  return std::find(sections().begin(), sections().end(), s) != sections().end();
}

std::string first_key_of(const std::string& sec) {
  for (const auto& f : config_fields())
    if (section_of(f.key) == sec) return f.key;
  return sec;
}

const Field<Config>* find_field(const std::string& key) {
  for (const auto& f : config_fields())
    if (f.key == key) return &f;
  return nullptr;
}

const Field<RouteConfig>* find_route_field(const std::string& leaf) {
  for (const auto& f : route_fields())
    if (f.key == leaf) return &f;
  return nullptr;
}

// Every valid dotted key, for suggestions; route keys as "model.routes.start_layer".
std::vector<std::string> all_keys() {
  std::vector<std::string> keys;
  for (const auto& f : config_fields()) keys.push_back(f.key);
  keys.push_back(kRoutesKey);
  for (const auto& f : route_fields()) keys.push_back(std::string(kRoutesKey) + "." + f.key);
  return keys;
}

// "unknown key 'train.stpes'; did you mean 'train.steps'?" -- or the keys that would be valid.
[[noreturn]] void unknown_key(const std::string& key, const std::vector<std::string>& candidates,
                              const std::string& valid_here) {
  std::vector<std::string> near = closest_keys(key, candidates);
  std::string text = "unknown key '" + key + "'";
  if (!near.empty()) {
    for (auto& k : near) k = "'" + k + "'";
    text += "; did you mean " + join(near, ", ", " or ") + "?";
  } else {
    text += "; " + valid_here;
  }
  throw KeyError{key, text};
}

[[noreturn]] void unknown_config_key(const std::string& key) {
  std::string sec = section_of(key);
  std::string valid;
  if (is_section(sec) && key != sec) {
    std::vector<std::string> here;
    for (const auto& f : config_fields())
      if (section_of(f.key) == sec) here.push_back(leaf_of(f.key));
    if (sec == "model") here.push_back("routes");
    valid = "the keys of [" + sec + "] are " + join(here, ", ", ", ");
  } else {
    std::vector<std::string> secs;
    for (const auto& s : sections()) secs.push_back("[" + s + "]");
    valid = "the sections are " + join(secs, ", ", ", ");
  }
  unknown_key(key, all_keys(), valid);
}

// An empty [tarin]: "unknown section [tarin]; did you mean [train]?"
[[noreturn]] void unknown_section(const std::string& sec) {
  std::vector<std::string> secs;
  for (const auto& s : sections()) secs.push_back("[" + s + "]");
  std::string text = "unknown section [" + sec + "]";
  std::vector<std::string> near = closest_keys(sec, sections());
  for (auto& k : near) k = "[" + k + "]";
  if (!near.empty()) text += "; did you mean " + join(near, ", ", " or ") + "?";
  else text += "; the sections are " + join(secs, ", ", ", ");
  throw KeyError{sec, text};
}

std::vector<std::string> route_candidates(const std::string& prefix) {
  std::vector<std::string> c;
  for (const auto& f : route_fields()) c.push_back(prefix + "." + f.key);
  return c;
}

// ============================================================================================
// TOML table -> Config
// ============================================================================================

void read_routes(const toml::node& n, std::vector<RouteConfig>& routes) {
  if (!n.is_array())
    type_error(kRoutesKey, "an array of tables ([[model.routes]] sections)", n);
  const toml::array& arr = *n.as_array();
  routes.assign(arr.size(), RouteConfig{});
  for (size_t i = 0; i < arr.size(); ++i) {
    const std::string prefix = std::string(kRoutesKey) + "[" + std::to_string(i) + "]";
    if (!arr[i].is_table())
      type_error(prefix, "a table like {selection_ratio = 0.5, start_layer = 2, end_layer = 8}",
                 arr[i]);
    for (auto&& [k, v] : *arr[i].as_table()) {
      const std::string leaf(k.str());
      const Field<RouteConfig>* f = find_route_field(leaf);
      if (!f) {
        std::vector<std::string> names;
        for (const auto& rf : route_fields()) names.push_back(rf.key);
        unknown_key(prefix + "." + leaf, route_candidates(prefix),
                    "the keys of a route are " + join(names, ", ", ", "));
      }
      f->read(routes[i], v, prefix + "." + leaf);
    }
  }
}

Config from_table(const toml::table& root) {
  Config c;
  for (auto&& [sk, snode] : root) {
    const std::string sec(sk.str());
    if (!is_section(sec)) {
      // [tarin] steps = 1 -> 'tarin.steps' (suggests train.steps); a bare top-level key as is.
      const toml::table* t = snode.as_table();
      if (t && !t->empty()) unknown_config_key(sec + "." + std::string(t->begin()->first.str()));
      if (t) unknown_section(sec);
      unknown_config_key(sec);
    }
    if (!snode.is_table()) type_error(sec, ("a table (a [" + sec + "] section)").c_str(), snode);
    for (auto&& [k, v] : *snode.as_table()) {
      const std::string key = sec + "." + std::string(k.str());
      if (key == kRoutesKey) {
        read_routes(v, c.model.routes);
        continue;
      }
      const Field<Config>* f = find_field(key);
      if (!f) unknown_config_key(key);
      f->read(c, v, key);
    }
  }
  return c;
}

// ============================================================================================
// Value checks
// ============================================================================================

[[noreturn]] void range_error(const std::string& key, const std::string& allowed,
                              const std::string& got) {
  throw KeyError{key, "key '" + key + "' must be " + allowed + ", got " + got};
}

void check_config(const Config& c) {
  for (const auto& f : config_fields())
    if (!f.ok(c)) range_error(f.key, f.allowed, f.print(c));
  const auto& routes = c.model.routes;
  for (size_t i = 0; i < routes.size(); ++i) {
    const std::string prefix = std::string(kRoutesKey) + "[" + std::to_string(i) + "]";
    for (const auto& f : route_fields())
      if (!f.ok(routes[i])) range_error(prefix + "." + f.key, f.allowed, f.print(routes[i]));
    if (routes[i].end_layer < routes[i].start_layer)
      range_error(prefix + ".end_layer",
                  ">= " + prefix + ".start_layer (" + std::to_string(routes[i].start_layer) + ")",
                  std::to_string(routes[i].end_layer));
    if (i > 0 && routes[i].start_layer <= routes[i - 1].end_layer) {
      const std::string prev = std::string(kRoutesKey) + "[" + std::to_string(i - 1) + "]";
      range_error(prefix + ".start_layer",
                  "> " + prev + ".end_layer (" + std::to_string(routes[i - 1].end_layer) +
                      "): routes are listed in order of layers and must not overlap",
                  std::to_string(routes[i].start_layer));
    }
  }
}

// ============================================================================================
// Overrides "a.b=value"
// ============================================================================================

// "model.routes[2].end_layer" -> (2, "end_layer"); nullopt for any other key.
std::optional<std::pair<size_t, std::string>> route_item_key(const std::string& key) {
  const std::string head = std::string(kRoutesKey) + "[";
  if (key.compare(0, head.size(), head) != 0) return std::nullopt;
  size_t close = key.find(']', head.size());
  if (close == std::string::npos || close == head.size() || close + 1 >= key.size() ||
      key[close + 1] != '.')
    return std::nullopt;
  const std::string digits = key.substr(head.size(), close - head.size());
  if (digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 6)
    return std::nullopt;
  return std::make_pair(static_cast<size_t>(std::stoul(digits)), key.substr(close + 2));
}

// The override's value as a TOML node: TOML syntax when it parses as one value, else the text
// as a string (`run.name=abc`). For a string key any unquoted value is its text
// (`eval.seeds=5`, `run.name=2024-01-01`).
toml::table parse_override_value(const std::string& value, bool string_key) {
  toml::table holder;
  try {
    const std::string doc = "v = " + value;
    toml::table parsed = toml::parse(std::string_view(doc), std::string_view("--set"));
    if (parsed.size() == 1 && parsed.contains("v")) holder = std::move(parsed);
  } catch (const toml::parse_error&) {
  }
  const toml::node* v = holder.get("v");
  if (!v || (string_key && !v->is_string())) {
    holder.clear();
    holder.insert("v", value);
  }
  return holder;
}

// Sets one key of the parsed table; returns the dotted key it set.
std::string apply_override(toml::table& root, const std::string& item) {
  size_t eq = item.find('=');
  if (eq == std::string::npos)
    throw ConfigError("--set: malformed override '" + item +
                      "': expected key=value, e.g. train.steps=100");
  const std::string key = trim(item.substr(0, eq));
  const std::string value = trim(item.substr(eq + 1));
  if (key.empty())
    throw ConfigError("--set: malformed override '" + item + "': the key before '=' is empty");

  if (auto route = route_item_key(key)) {  // model.routes[i].key=value
    const auto [index, leaf] = *route;
    const std::string prefix = std::string(kRoutesKey) + "[" + std::to_string(index) + "]";
    if (!find_route_field(leaf)) {
      std::vector<std::string> names;
      for (const auto& rf : route_fields()) names.push_back(rf.key);
      unknown_key(key, route_candidates(prefix), "the keys of a route are " + join(names, ", ", ", "));
    }
    toml::table* model = root["model"].as_table();
    toml::array* routes = model ? (*model)["routes"].as_array() : nullptr;
    const size_t have = routes ? routes->size() : 0;
    if (index >= have || !(*routes)[index].is_table())
      throw KeyError{key, "cannot set '" + key + "': the config has " + std::to_string(have) +
                              " route(s); set the whole list instead, e.g. " + kRoutesKey +
                              "=[{selection_ratio=0.5, start_layer=2, end_layer=8}]"};
    toml::table v = parse_override_value(value, false);
    toml::table* route_table = (*routes)[index].as_table();
    v.get("v")->visit([&](auto& node) { route_table->insert_or_assign(leaf, std::move(node)); });
    return key;
  }

  const size_t dot = key.find('.');
  const std::string sec = key.substr(0, dot);
  if (dot == std::string::npos && is_section(sec))
    throw ConfigError("--set: override '" + item + "' must set one key of [" + sec +
                      "], e.g. " + sec + "." + leaf_of(first_key_of(sec)) + "=...");
  const Field<Config>* f = find_field(key);
  if (!f && key != kRoutesKey) unknown_config_key(key);

  toml::table v = parse_override_value(value, f && f->is_string);
  if (!root.contains(sec)) root.insert(sec, toml::table{});
  toml::table* st = root[sec].as_table();
  if (!st)
    throw ConfigError("--set: cannot set '" + key + "': '" + sec +
                      "' in the config file is not a [" + sec + "] section");
  v.get("v")->visit([&](auto& node) { st->insert_or_assign(leaf_of(key), std::move(node)); });
  return key;
}

// Where a key's value came from: "--set" when an override set it (or a list it is part of).
std::string source_of(const std::string& key, const std::vector<std::string>& overridden,
                      const std::string& file) {
  for (const std::string& o : overridden) {
    if (key == o) return "--set";
    if (key.size() > o.size() && key.compare(0, o.size(), o) == 0 &&
        (key[o.size()] == '.' || key[o.size()] == '['))
      return "--set";
  }
  return file;
}

}  // namespace

// ============================================================================================
// Public interface
// ============================================================================================

Config parse_config(const std::string& toml_text, const std::string& source,
                    const std::vector<std::string>& overrides) {
  toml::table root;
  try {
    root = toml::parse(std::string_view(toml_text), std::string_view(source));
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    throw ConfigError(source + ":" + std::to_string(where.line) + ":" +
                      std::to_string(where.column) + ": TOML syntax error: " +
                      std::string(e.description()));
  }
  std::vector<std::string> overridden;
  try {
    for (const std::string& item : overrides) overridden.push_back(apply_override(root, item));
  } catch (const KeyError& e) {
    throw ConfigError("--set: " + e.text);
  }
  try {
    Config c = from_table(root);
    check_config(c);
    return c;
  } catch (const KeyError& e) {
    throw ConfigError(source_of(e.key, overridden, source) + ": " + e.text);
  }
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw ConfigError("cannot open config file '" + path +
                      "': check the path (configs/ holds the shipped ones)");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw ConfigError("cannot read config file '" + path + "'");
  return parse_config(text.str(), path, overrides);
}

std::string to_toml(const Config& c) {
  // "key = value" padded so that the allowed values line up as comments.
  auto line = [](const std::string& key, const std::string& value, const std::string& allowed) {
    std::string s = key + " = " + value;
    if (!allowed.empty() && allowed != "a finite number") {
      if (s.size() < 36) s.resize(36, ' ');
      s += "  # " + allowed;
    }
    return s + "\n";
  };
  std::ostringstream os;
  os << "# Nano-TREAD config, resolved: every key with its value (keys: docs/config.md).\n";
  std::string current;
  for (const auto& f : config_fields()) {
    const std::string sec = section_of(f.key);
    if (sec != current) {
      if (current == "model") {  // [[model.routes]] go after the plain [model] keys
        if (c.model.routes.empty()) os << "# no [[model.routes]]: a plain DiT\n";
        for (const RouteConfig& r : c.model.routes) {
          os << "\n[[model.routes]]\n";
          for (const auto& rf : route_fields()) os << line(rf.key, rf.print(r), rf.allowed);
        }
      }
      os << "\n[" << sec << "]\n";
      current = sec;
    }
    os << line(leaf_of(f.key), f.print(c), f.allowed);
  }
  return os.str();
}

void validate(const Config& c) {
  try {
    check_config(c);
  } catch (const KeyError& e) {
    throw ConfigError(e.text);
  }
}

std::vector<int64_t> parse_int_list(const std::string& s) {
  auto fail = [&](const std::string& why) -> ConfigError {
    return ConfigError("integer list \"" + s + "\": " + why +
                       " (write it like \"0-63\" or \"1,5,7-9\")");
  };
  auto number = [&](const std::string& text) {
    const std::string t = trim(text);
    int64_t v = 0;
    auto res = std::from_chars(t.data(), t.data() + t.size(), v);
    if (t.empty() || t.find_first_not_of("0123456789") != std::string::npos ||
        res.ec != std::errc() || res.ptr != t.data() + t.size())
      throw fail("'" + t + "' is not a non-negative integer");
    return v;
  };
  constexpr int64_t kMaxCount = 100000000;  // a guard against "0-999999999999"
  if (trim(s).empty()) throw fail("it is empty");
  std::vector<int64_t> out;
  size_t start = 0;
  while (true) {
    size_t comma = s.find(',', start);
    const std::string part =
        trim(s.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (part.empty()) throw fail("an empty item between commas");
    size_t dash = part.find('-');
    if (dash == std::string::npos) {
      out.push_back(number(part));
    } else {
      int64_t a = number(part.substr(0, dash)), b = number(part.substr(dash + 1));
      if (b < a) throw fail("range '" + part + "' ends before it starts");
      if (b - a >= kMaxCount || static_cast<int64_t>(out.size()) + (b - a) >= kMaxCount)
        throw fail("more than " + std::to_string(kMaxCount) + " integers");
      for (int64_t v = a; v <= b; ++v) out.push_back(v);
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

}  // namespace nt
