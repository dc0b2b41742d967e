// safetensors I/O: interop with the reference format both ways (a file built byte by byte by
// Python's standard library the way safetensors.torch.save_file lays it out, and Python
// decoding our files), exact round trips of every dtype, and corrupted files.
#include "core/safetensors.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>

#include "test_util.h"

namespace {

// Same dtype, same shape, same bytes (so NaN, -0.0 and every bit pattern count).
::testing::AssertionResult same_bits(const at::Tensor& got, const at::Tensor& want) {
  if (!got.defined()) return ::testing::AssertionFailure() << "tensor is undefined";
  if (got.scalar_type() != want.scalar_type())
    return ::testing::AssertionFailure() << "dtype " << got.scalar_type() << " != "
                                         << want.scalar_type();
  if (got.sizes() != want.sizes())
    return ::testing::AssertionFailure() << "shape " << got.sizes() << " != " << want.sizes();
  at::Tensor a = got.contiguous(), b = want.contiguous();
  if (a.numel() > 0 &&
      std::memcmp(a.data_ptr(), b.data_ptr(), a.numel() * a.element_size()) != 0)
    return ::testing::AssertionFailure() << "values differ:\n" << got << "\nvs\n" << want;
  return ::testing::AssertionSuccess();
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

std::string le_u64(uint64_t n) {
  std::string s(8, '\0');
  for (int b = 0; b < 8; ++b) s[b] = static_cast<char>((n >> (8 * b)) & 0xff);
  return s;
}

// A hand-made file: length, header text padded with spaces to 8 bytes, then `data`.
std::string raw_file(std::string header, const std::string& data) {
  header.append((8 - header.size() % 8) % 8, ' ');
  return le_u64(header.size()) + header + data;
}

// Loading `path` must throw SafetensorsError naming the path and containing `fragment`.
void expect_load_error(const std::string& path, const std::string& fragment) {
  try {
    nt::load_safetensors(path);
    ADD_FAILURE() << "expected SafetensorsError for " << path << " (" << fragment << ")";
  } catch (const nt::SafetensorsError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << "message lacks the path: " << msg;
    EXPECT_NE(msg.find(fragment), std::string::npos) << "message lacks '" << fragment
                                                     << "': " << msg;
  }
}

void expect_save_error(const std::string& path, const std::vector<nt::NamedTensor>& tensors,
                       const std::string& fragment) {
  try {
    nt::save_safetensors(path, tensors);
    ADD_FAILURE() << "expected SafetensorsError for " << path << " (" << fragment << ")";
  } catch (const nt::SafetensorsError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << "message lacks the path: " << msg;
    EXPECT_NE(msg.find(fragment), std::string::npos) << "message lacks '" << fragment
                                                     << "': " << msg;
  }
}

// Builds a safetensors file with Python's standard library exactly as the reference
// serialiser does: tensors sorted by dtype (descending in the reference's Dtype order) then
// name, "__metadata__" first, compact JSON, spaces up to a multiple of 8. Prints the order.
const char* kGoldenWriter = R"PY(
import json, struct, sys
def bf16(values):
    return b"".join(struct.pack("<f", v)[2:4] for v in values)
tensors = {
    "w": ("F32", [2, 3], struct.pack("<6f", 0.0, 1.5, -2.25, 0.1, float("inf"), float("nan"))),
    "empty": ("F32", [0, 4], b""),
    "b.bias": ("F64", [3], struct.pack("<3d", -0.0, 1e-300, 2.0 / 3.0)),
    "h": ("F16", [3], struct.pack("<3e", 0.5, -65504.0, 2.0 ** -24)),
    "bf": ("BF16", [2, 1], bf16([1.0, -3.140625])),
    "i64": ("I64", [2], struct.pack("<2q", 2 ** 40 + 3, -(2 ** 62))),
    "scalar": ("I32", [], struct.pack("<i", -7)),
    "i16": ("I16", [3], struct.pack("<3h", -32768, 0, 32767)),
    "i8": ("I8", [2], struct.pack("<2b", -128, 127)),
    "u8": ("U8", [2, 2], bytes([0, 1, 128, 255])),
    "mask": ("BOOL", [3], bytes([1, 0, 1])),
}
ORDER = ["BOOL", "U8", "I8", "I16", "F16", "BF16", "I32", "F32", "F64", "I64"]
items = sorted(tensors.items(), key=lambda kv: (-ORDER.index(kv[1][0]), kv[0]))
header = {"__metadata__": {"format": "pt"}}
offset, data = 0, b""
for name, (dtype, shape, raw) in items:
    header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
    offset += len(raw)
    data += raw
text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
text += b" " * ((8 - len(text) % 8) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + data)
print(" ".join(name for name, _ in items))
)PY";

// The values the golden file holds, as LibTorch tensors.
std::map<std::string, at::Tensor> golden_tensors() {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::map<std::string, at::Tensor> t;
  t["w"] = torch::tensor(std::vector<float>{0.f, 1.5f, -2.25f, 0.1f, inf, nan}).reshape({2, 3});
  t["empty"] = torch::empty({0, 4}, torch::kFloat);
  t["b.bias"] = torch::tensor(std::vector<double>{-0.0, 1e-300, 2.0 / 3.0}, torch::kDouble);
  t["h"] = torch::tensor(std::vector<double>{0.5, -65504.0, std::ldexp(1.0, -24)}).to(torch::kHalf);
  t["bf"] = torch::tensor(std::vector<double>{1.0, -3.140625}).to(torch::kBFloat16).reshape({2, 1});
  t["i64"] = torch::tensor(std::vector<int64_t>{(int64_t(1) << 40) + 3, -(int64_t(1) << 62)});
  t["scalar"] = torch::tensor(-7, torch::kInt).reshape({});
  t["i16"] = torch::tensor(std::vector<int64_t>{-32768, 0, 32767}).to(torch::kShort);
  t["i8"] = torch::tensor(std::vector<int64_t>{-128, 127}).to(torch::kChar);
  t["u8"] = torch::tensor(std::vector<int64_t>{0, 1, 128, 255}).to(torch::kByte).reshape({2, 2});
  t["mask"] = torch::tensor(std::vector<int64_t>{1, 0, 1}).to(torch::kBool);
  return t;
}

std::vector<std::string> split_words(const std::string& s) {
  std::istringstream in(s);
  return {std::istream_iterator<std::string>(in), std::istream_iterator<std::string>()};
}

TEST(Safetensors, ReadsReferenceLayoutAndWritesItByteForByte) {
  const std::string dir = nt::test::scratch_dir();
  const std::string script = dir + "/golden.py", golden = dir + "/golden.safetensors";
  write_bytes(script, kGoldenWriter);
  std::string out;
  ASSERT_EQ(nt::test::run_command("python3 " + script + " " + golden, &out), 0) << out;
  const std::vector<std::string> order = split_words(out);
  const std::vector<std::string> want_order = {"i64", "b.bias", "empty", "w",  "scalar", "bf",
                                               "h",   "i16",    "i8",    "u8", "mask"};
  ASSERT_EQ(order, want_order);

  const nt::SafetensorsFile file = nt::load_safetensors(golden);
  EXPECT_EQ(file.order, want_order);
  EXPECT_EQ(file.metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
  const auto want = golden_tensors();
  ASSERT_EQ(file.tensors.size(), want.size());
  for (const auto& [name, tensor] : want) {
    ASSERT_TRUE(file.tensors.count(name)) << name;
    EXPECT_TRUE(same_bits(file.tensors.at(name), tensor)) << name;
  }

  // Our writer, given the reference's order and metadata, produces the very same bytes.
  std::vector<nt::NamedTensor> named;
  for (const std::string& name : want_order) named.push_back({name, want.at(name)});
  const std::string ours = dir + "/ours.safetensors";
  nt::save_safetensors(ours, named, {{"format", "pt"}});
  EXPECT_EQ(read_bytes(ours), read_bytes(golden));
}

TEST(Safetensors, MatchesTheReferenceSerialiserExample) {
  // One F32 tensor "attn.0" [1, 2, 3] = 0..5: a 64-byte header needs no padding.
  const std::string dir = nt::test::scratch_dir();
  const std::string path = dir + "/attn.safetensors";
  nt::save_safetensors(path, {{"attn.0", torch::arange(6, torch::kFloat).reshape({1, 2, 3})}});
  const std::string header = R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
  ASSERT_EQ(header.size(), 64u);
  std::string data;
  for (float v : {0.f, 1.f, 2.f, 3.f, 4.f, 5.f})
    data.append(reinterpret_cast<const char*>(&v), sizeof(v));
  EXPECT_EQ(read_bytes(path), le_u64(64) + header + data);

  // No tensors at all: "{}" padded to 8 bytes.
  nt::save_safetensors(dir + "/empty.safetensors", {});
  EXPECT_EQ(read_bytes(dir + "/empty.safetensors"), le_u64(8) + "{}      ");
  const auto empty = nt::load_safetensors(dir + "/empty.safetensors");
  EXPECT_TRUE(empty.tensors.empty());
  EXPECT_TRUE(empty.metadata.empty());
}

// Python decodes a file we wrote with nothing but struct and json, checking the layout.
const char* kPythonReader = R"PY(
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
(n,) = struct.unpack("<Q", raw[:8])
assert n % 8 == 0, "header length %d is not a multiple of 8" % n
header = json.loads(raw[8:8 + n].decode("utf-8"))
data = raw[8 + n:]
FMT = {"F64": "d", "F32": "f", "F16": "e", "I64": "q", "I32": "i", "I16": "h", "I8": "b",
       "U8": "B", "BOOL": "?"}
SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
        "U8": 1, "BOOL": 1}
out = {"__metadata__": header.pop("__metadata__", {}), "order": list(header)}
cursor = 0
for name, info in header.items():
    begin, end = info["data_offsets"]
    assert begin == cursor, name
    cursor = end
    count = 1
    for s in info["shape"]:
        count *= s
    chunk = data[begin:end]
    assert len(chunk) == count * SIZE[info["dtype"]], name
    if info["dtype"] == "BF16":
        values = [struct.unpack("<f", b"\0\0" + chunk[2 * i:2 * i + 2])[0] for i in range(count)]
    else:
        values = [float(v) for v in struct.unpack("<%d%s" % (count, FMT[info["dtype"]]), chunk)]
    out[name] = {"dtype": info["dtype"], "shape": info["shape"], "values": values}
assert cursor == len(data), "trailing bytes"
print(json.dumps(out))
)PY";

TEST(Safetensors, PythonDecodesOurFiles) {
  const std::string dir = nt::test::scratch_dir();
  const std::string script = dir + "/reader.py", path = dir + "/ours.safetensors";
  write_bytes(script, kPythonReader);
  auto t = golden_tensors();
  t.erase("w");  // JSON has no NaN or infinity
  t["w"] = torch::tensor(std::vector<float>{0.f, 1.5f, -2.25f, 0.1f}).reshape({2, 2});
  // Our order is the caller's, not sorted by dtype.
  const std::vector<std::string> order = {"mask", "w",   "scalar", "bf", "h", "empty",
                                          "u8",   "i64", "i16",    "i8", "b.bias"};
  std::vector<nt::NamedTensor> named;
  for (const std::string& name : order) named.push_back({name, t.at(name)});
  const std::map<std::string, std::string> meta = {{"step", "12"}, {"note", "ünïcode ✓"}};
  nt::save_safetensors(path, named, meta);

  std::string out;
  ASSERT_EQ(nt::test::run_command("python3 " + script + " " + path, &out), 0) << out;
  const nlohmann::json got = nlohmann::json::parse(out);
  EXPECT_EQ(got["order"].get<std::vector<std::string>>(), order);
  EXPECT_EQ((got["__metadata__"].get<std::map<std::string, std::string>>()), meta);
  const std::map<at::ScalarType, std::string> names = {
      {torch::kDouble, "F64"}, {torch::kFloat, "F32"}, {torch::kHalf, "F16"},
      {torch::kBFloat16, "BF16"}, {torch::kLong, "I64"}, {torch::kInt, "I32"},
      {torch::kShort, "I16"}, {torch::kChar, "I8"}, {torch::kByte, "U8"}, {torch::kBool, "BOOL"}};
  for (const std::string& name : order) {
    const at::Tensor& want = t.at(name);
    const auto& entry = got[name];
    EXPECT_EQ(entry["dtype"], names.at(want.scalar_type())) << name;
    EXPECT_EQ(entry["shape"].get<std::vector<int64_t>>(), want.sizes().vec()) << name;
    const at::Tensor flat = want.to(torch::kDouble).flatten();
    const auto values = entry["values"].get<std::vector<double>>();
    ASSERT_EQ(values.size(), static_cast<size_t>(flat.numel())) << name;
    for (size_t i = 0; i < values.size(); ++i)
      EXPECT_EQ(values[i], flat[i].item<double>()) << name << "[" << i << "]";
  }
}

TEST(Safetensors, RoundTripsEveryDtypeExactly) {
  const std::string dir = nt::test::scratch_dir();
  torch::manual_seed(3);
  std::vector<nt::NamedTensor> named = {
      {"f64", torch::randn({3, 5}, torch::kDouble)},
      {"f32", torch::randn({2, 3, 4}) * 1e10},
      {"f16", torch::randn({7}).to(torch::kHalf)},
      {"bf16", torch::randn({4, 4}).to(torch::kBFloat16)},
      {"i64", torch::randint(std::numeric_limits<int64_t>::min(),
                             std::numeric_limits<int64_t>::max(), {6}, torch::kLong)},
      {"i32", torch::randint(-100000, 100000, {2, 2}, torch::kInt)},
      {"i16", torch::randint(-30000, 30000, {5}, torch::kShort)},
      {"i8", torch::randint(-128, 128, {9}, torch::kChar)},
      {"u8", torch::randint(0, 256, {3, 3}, torch::kByte)},
      {"bool", torch::rand({11}) > 0.5},
      {"zero_d", torch::tensor(2.5)},
      {"zero_d_long", torch::tensor(int64_t(-9))},
      {"empty", torch::empty({2, 0, 3}, torch::kBFloat16)},
      {"transposed", torch::arange(12, torch::kFloat).reshape({3, 4}).t()},  // not contiguous
      {"big", torch::randn({3 << 18})},  // 3 MiB
      {"blocks.0.attn.qkv.weight", torch::randn({6, 2}).requires_grad_()},
  };
  const std::string path = dir + "/all.safetensors";
  nt::save_safetensors(path, named);
  const std::string bytes = read_bytes(path);
  uint64_t n = 0;
  for (int b = 0; b < 8; ++b) n |= uint64_t(static_cast<unsigned char>(bytes[b])) << (8 * b);
  EXPECT_EQ(n % 8, 0u) << "the byte buffer must start 8-byte aligned";

  const nt::SafetensorsFile file = nt::load_safetensors(path);
  ASSERT_EQ(file.order.size(), named.size());
  for (size_t i = 0; i < named.size(); ++i) {
    EXPECT_EQ(file.order[i], named[i].name);
    const at::Tensor& got = file.tensors.at(named[i].name);
    EXPECT_TRUE(same_bits(got, named[i].tensor.detach())) << named[i].name;
    EXPECT_TRUE(got.is_contiguous()) << named[i].name;
    EXPECT_TRUE(got.device().is_cpu()) << named[i].name;
  }
  EXPECT_TRUE(file.metadata.empty());

  // Loaded tensors own their memory: writing into one leaves the others alone.
  nt::SafetensorsFile again = nt::load_safetensors(path);
  again.tensors.at("f32").zero_();
  EXPECT_TRUE(same_bits(again.tensors.at("f64"), named[0].tensor));
  EXPECT_TRUE(same_bits(again.tensors.at("f16"), named[2].tensor));
}

TEST(Safetensors, MetadataRoundTrip) {
  const std::string dir = nt::test::scratch_dir();
  const std::map<std::string, std::string> meta = {
      {"format", "pt"}, {"config", R"({"model": {"name": "DiT-XL/2"}})"},
      {"quotes\"and\\slashes", "line\nbreak\ttab"}, {"empty", ""}, {"utf8", "σ_data ≈ 0.5"}};
  const std::string path = dir + "/meta.safetensors";
  nt::save_safetensors(path, {{"x", torch::ones({2})}}, meta);
  const auto file = nt::load_safetensors(path);
  EXPECT_EQ(file.metadata, meta);
  EXPECT_TRUE(same_bits(file.tensors.at("x"), torch::ones({2})));
}

TEST(Safetensors, WriterRejectsBadInputAndNamesThePath) {
  const std::string dir = nt::test::scratch_dir();
  const std::string path = dir + "/bad.safetensors";
  expect_save_error(path, {{"a", torch::ones({1})}, {"a", torch::zeros({2})}}, "duplicate");
  expect_save_error(path, {{"__metadata__", torch::ones({1})}}, "reserved");
  expect_save_error(path, {{"u", at::Tensor()}}, "undefined");
  expect_save_error(path, {{"c", torch::ones({2}, torch::kComplexFloat)}}, "'c'");
  const std::string nowhere = dir + "/no_such_folder/x.safetensors";
  expect_save_error(nowhere, {{"a", torch::ones({1})}}, "No such file or directory");
  try {
    nt::save_safetensors(path, {{"bad\xff", torch::ones({1})}});
    ADD_FAILURE() << "a name that is not UTF-8 must be refused";
  } catch (const nt::SafetensorsError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST(Safetensors, CorruptFilesThrowNamingTheFile) {
  const std::string dir = nt::test::scratch_dir();
  const std::string good = dir + "/good.safetensors";
  nt::save_safetensors(good, {{"a", torch::arange(4, torch::kFloat)},
                              {"b", torch::arange(3, torch::kLong)}});
  const std::string bytes = read_bytes(good);
  auto make = [&](const std::string& name, const std::string& content) {
    const std::string path = dir + "/" + name + ".safetensors";
    write_bytes(path, content);
    return path;
  };
  const std::string f32x4 = std::string(16, '\0');

  expect_load_error(dir + "/missing.safetensors", "cannot open");
  expect_load_error(make("tiny", bytes.substr(0, 5)), "shorter than the 8-byte");
  expect_load_error(make("truncated", bytes.substr(0, bytes.size() - 3)), "truncated");
  expect_load_error(make("trailing", bytes + "xyz"), "trailing bytes");
  expect_load_error(make("header_too_long", le_u64(1000) + "{}      "), "exceeds the 8 bytes");
  expect_load_error(make("header_huge", le_u64(uint64_t(1) << 60) + "{}"), "100 MB");
  expect_load_error(make("bad_json", raw_file(R"({"a":{"dtype":"F32",)", f32x4)),
                    "not valid JSON");
  expect_load_error(make("not_object", raw_file("[1, 2]", "")), "JSON object");
  expect_load_error(
      make("out_of_range",
           raw_file(R"({"a":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}})", f32x4)),
      "reach past");
  expect_load_error(
      make("length_mismatch",
           raw_file(R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})", f32x4)),
      "need 16");
  expect_load_error(
      make("overlap", raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                               R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                               std::string(12, '\0'))),
      "overlap tensor 'a'");
  expect_load_error(
      make("gap", raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                           f32x4)),
      "gap");
  expect_load_error(
      make("unknown_dtype",
           raw_file(R"({"w8":{"dtype":"F8_E4M3","shape":[16],"data_offsets":[0,16]}})", f32x4)),
      "tensor 'w8'");
  expect_load_error(
      make("negative_shape",
           raw_file(R"({"a":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", f32x4)),
      "shape[0]");
  expect_load_error(
      make("reversed", raw_file(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[16,0]}})",
                                f32x4)),
      "end before");
  expect_load_error(make("missing_key", raw_file(R"({"a":{"dtype":"F32","shape":[4]}})", f32x4)),
                    "data_offsets");
  expect_load_error(
      make("duplicate",
           raw_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                    R"("a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
                    f32x4)),
      "twice");
  expect_load_error(
      make("metadata_number",
           raw_file(R"({"__metadata__":{"step":3},"a":{"dtype":"F32","shape":[4],)"
                    R"("data_offsets":[0,16]}})",
                    f32x4)),
      "\"step\"");
  expect_load_error(
      make("overflow", raw_file(R"({"a":{"dtype":"F64","shape":[4294967296,4294967296],)"
                                R"("data_offsets":[0,16]}})",
                                f32x4)),
      "too large");
  expect_load_error(dir, "not a regular file");

  // The untouched file still loads.
  const auto file = nt::load_safetensors(good);
  EXPECT_TRUE(same_bits(file.tensors.at("a"), torch::arange(4, torch::kFloat)));
  EXPECT_TRUE(same_bits(file.tensors.at("b"), torch::arange(3, torch::kLong)));
}

}  // namespace

namespace {

// The index (header alone) names what load_safetensors reads, and element ranges read through it
// equal the slices of the whole tensors: empty, inside, whole, the last element; ranges outside a
// tensor, unknown names and a truncated file are errors naming the file.
TEST(Safetensors, IndexAndElementRangesMatchTheWholeRead) {
  const std::string dir = nt::test::scratch_dir();
  const std::string path = dir + "/parts.safetensors";
  const std::vector<nt::NamedTensor> tensors = {
      {"a", torch::arange(24, torch::kFloat).reshape({2, 3, 4})},
      {"b", (torch::arange(7, torch::kFloat) / 3).to(torch::kBFloat16)},
      {"c", torch::arange(5, torch::kLong) * 1000},
  };
  nt::save_safetensors(path, tensors, {{"k", "v"}});
  const nt::SafetensorsIndex index = nt::index_safetensors(path);
  const nt::SafetensorsFile whole = nt::load_safetensors(path);
  EXPECT_EQ(index.order, whole.order);
  EXPECT_EQ(index.metadata, whole.metadata);
  for (const auto& t : tensors) {
    const auto& info = index.tensors.at(t.name);
    EXPECT_EQ(info.dtype, t.tensor.scalar_type()) << t.name;
    EXPECT_EQ(info.shape, t.tensor.sizes().vec()) << t.name;
    const int64_t n = t.tensor.numel();
    for (auto [offset, count] : std::vector<std::pair<int64_t, int64_t>>{{0, 0}, {1, n - 2}, {0, n}, {n - 1, 1}}) {
      const at::Tensor got = nt::read_tensor_elements(index, t.name, offset, count);
      EXPECT_TRUE(torch::equal(got, t.tensor.reshape({-1}).narrow(0, offset, count)))
          << t.name << " [" << offset << ", " << offset + count << ")";
    }
  }
  EXPECT_ANY_THROW(nt::read_tensor_elements(index, "a", 20, 5));
  EXPECT_ANY_THROW(nt::read_tensor_elements(index, "a", -1, 2));
  EXPECT_CONTAINS(nt::test::thrown_message<nt::SafetensorsError>([&] { nt::read_tensor_elements(index, "z", 0, 1); }),
                  "has no tensor 'z'");
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 4);
  EXPECT_CONTAINS(nt::test::thrown_message<nt::SafetensorsError>([&] { nt::index_safetensors(path); }), path);
}

}  // namespace
