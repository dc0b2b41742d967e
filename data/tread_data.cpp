// tread_data: the dataset tool (docs/data-format.md).
//   tread_data import-mnist --images F --labels F --out X.h5 [--size 32|16|8|...]
//   tread_data inspect FILE...     sizes, attributes, label histogram, per-channel mean/std of x
//   tread_data validate FILE...    full scan: NaN/Inf values, labels out of range, shapes
//   tread_data import-npy --latents X.npy|.npz [--labels Y.npy] [--moments] --out X.h5 ...
//   tread_data import-wds --shards DIR|X.tar... [--match T] --out X.h5 ...  (the reference's shards)
//   tread_data bench FILE... --batch B --threads T --seconds S   loader throughput
// Every error goes to stderr with exit code 1. Long imports and scans report progress with an
// estimate of the time left on stderr (at most once a second).
#include <ATen/core/Tensor.h>
#include <boost/program_options.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "core/rng.h"
#include "data/global_sampler.h"
#include "data/hdf5_check.h"
#include "data/latent_dataset.h"
#include "data/mnist_import.h"
#include "data/npy_import.h"
#include "data/prefetch_loader.h"
#include "data/progress.h"
#include "data/tool_commands.h"
#include "data/wds_import.h"

namespace po = boost::program_options;

namespace {

constexpr int64_t kChunkElems = int64_t(1) << 24;  // values per read chunk (64 MiB of float32)

const char* kUsage =
    "usage: tread_data <command> [options]\n"
    "\n"
    "Prepares and checks the HDF5 datasets that tread_run trains on (docs/data-format.md).\n"
    "\n"
    "commands:\n"
    "  import-mnist  convert MNIST IDX files to a pixel-space dataset file\n"
    "  import-npy    convert numpy arrays (.npy or .npz) of latents or moments and labels\n"
    "  import-wds    convert the reference's WebDataset shards (.latent.npy + .cls) of latents\n"
    "  inspect       print sizes, attributes, label histogram and value statistics\n"
    "  validate      scan files completely for bad values, labels and shapes\n"
    "  bench         measure the prefetch loader's throughput on files\n"
    "%s"
    "\n"
    "Run `tread_data <command> --help` for a command's options.\n";

// The usage text with the commands that upper layers registered (data/tool_commands.h).
std::string usage() {
  std::string extra;
  for (const auto& c : nt::tool_commands()) {
    std::string name = "  " + c.name;
    name.resize(std::max<size_t>(name.size() + 1, 16), ' ');
    extra += name + c.summary + "\n";
  }
  char buf[4096];
  std::snprintf(buf, sizeof(buf), kUsage, extra.c_str());
  return buf;
}

// A usage error: the command line itself is wrong.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

po::variables_map parse(const std::vector<std::string>& args, const po::options_description& desc,
                        const po::positional_options_description* pos) {
  po::variables_map vm;
  auto parser = po::command_line_parser(args).options(desc);
  if (pos) parser.positional(*pos);
  po::store(parser.run(), vm);
  return vm;
}

// A rate as a plain integer ("489881"), never in exponent notation.
std::string rate(double v) {
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(0);
  s << v;
  return s.str();
}

std::string fmt(double v, int precision = 6) {
  std::ostringstream s;
  s.precision(precision);
  s << v;
  return s.str();
}

// ---- import-mnist ---------------------------------------------------------------------------

int cmd_import_mnist(const std::vector<std::string>& args) {
  po::options_description desc(
      "usage: tread_data import-mnist --images F --labels F --out X.h5 [--size 32]\n\n"
      "Converts MNIST IDX files (.gz or plain) into /latents [N,1,S,S] float32 in [-1,1] (digits\n"
      "padded with -1 to 32x32, then box-averaged down to SxS) and /labels [N] int64.\n"
      "The embedded digits are data/mnist10k/{images-idx3-ubyte.gz,labels-idx1-ubyte.gz}.\n\n"
      "options");
  std::string images, labels, out;
  int size = 32;
  desc.add_options()("help,h", "show this help")(
      "images", po::value(&images)->required(), "images IDX file (magic 0x00000803)")(
      "labels", po::value(&labels)->required(), "labels IDX file (magic 0x00000801)")(
      "out", po::value(&out)->required(), "output HDF5 file (written as OUT.tmp, then renamed)")(
      "size", po::value(&size)->default_value(32), "side S of the output: 32, 16, 8, 4, 2 or 1");
  po::variables_map vm = parse(args, desc, nullptr);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  po::notify(vm);
  nt::import_mnist(images, labels, out, size);
  nt::LatentDataset ds({out});
  const nt::DatasetInfo& info = ds.info();
  std::cout << "wrote " << out << ": " << info.size << " samples, [" << info.channels << ","
            << info.height << "," << info.width << "] " << info.dtype << ", "
            << info.num_classes << " classes\n";
  return 0;
}

// ---- inspect --------------------------------------------------------------------------------

std::string shape_line(const nt::DatasetInfo& info) {
  std::ostringstream s;
  if (info.moments)
    s << "/moments [" << info.size << "," << 2 * info.channels << "," << info.height << ","
      << info.width << "] (mean || logvar), samples [" << info.channels << "," << info.height
      << "," << info.width << "]";
  else
    s << "/latents [" << info.size << "," << info.channels << "," << info.height << ","
      << info.width << "]";
  return s.str();
}

std::string histogram_line(const std::vector<int64_t>& counts) {
  std::ostringstream s;
  const int k = static_cast<int>(counts.size());
  if (k <= 32) {
    for (int c = 0; c < k; ++c) s << (c ? " " : "") << c << ":" << counts[c];
    return s.str();
  }
  int present = 0;
  std::vector<int> empty;
  for (int c = 0; c < k; ++c) {
    if (counts[c] > 0) ++present;
    else if (empty.size() < 20) empty.push_back(c);
  }
  auto [lo, hi] = std::minmax_element(counts.begin(), counts.end());
  s << present << " of " << k << " classes present, count per class min " << *lo << " max " << *hi;
  if (!empty.empty()) {
    s << "; empty classes:";
    for (int c : empty) s << " " << c;
    if (k - present > static_cast<int>(empty.size())) s << " ...";
  }
  return s.str();
}

void inspect_one(const std::string& path) {
  nt::LatentDataset ds({path});
  const nt::DatasetInfo& info = ds.info();
  const int64_t C = info.channels, HW = int64_t(info.height) * info.width;
  std::cout << path << "\n"
            << "  samples      " << info.size << "\n"
            << "  shape        " << shape_line(info) << "\n"
            << "  dtype        " << info.dtype << "\n"
            << "  read path    " << info.read_path << "\n"
            << "  latent space " << info.latent_space << "\n"
            << "  source       " << (info.source.empty() ? "(not given)" : info.source) << "\n"
            << (info.prescaled ? "  normalise    x = v (prescaled); samples decode as x / " + fmt(info.scale_factor, 10) +
                                     " + " + fmt(info.shift_factor, 10) + "\n"
                               : "  normalise    x = " + fmt(info.scale_factor, 10) + " * (v - " +
                                     fmt(info.shift_factor, 10) + ")\n")
            << "  num_classes  " << info.num_classes << "\n";

  // One pass in chunks: label counts and per-channel sums of x in float64.
  std::vector<int64_t> counts(info.num_classes, 0);
  std::vector<double> sum(C, 0.0), sum_sq(C, 0.0);
  const int64_t rows = std::max<int64_t>(1, kChunkElems / (C * HW));
  std::vector<int64_t> idx;
  nt::Progress progress("inspect '" + path + "'", info.size);
  for (int64_t begin = 0; begin < info.size; begin += rows) {
    const int64_t n = std::min(rows, info.size - begin);
    progress.update(begin);
    idx.resize(n);
    for (int64_t k = 0; k < n; ++k) idx[k] = begin + k;
    at::Tensor x, y;
    ds.read(idx, /*noise_seed=*/0, &x, &y);  // x [n,C,H,W] float32, y [n] int64
    const float* xp = x.data_ptr<float>();
    const int64_t* yp = y.data_ptr<int64_t>();
    for (int64_t k = 0; k < n; ++k) {
      ++counts[yp[k]];
      for (int64_t c = 0; c < C; ++c) {
        const float* v = xp + (k * C + c) * HW;
        double s = 0, s2 = 0;
        for (int64_t j = 0; j < HW; ++j) {
          s += v[j];
          s2 += double(v[j]) * v[j];
        }
        sum[c] += s;
        sum_sq[c] += s2;
      }
    }
  }
  progress.finish();
  std::cout << "  labels       " << histogram_line(counts) << "\n";
  std::cout << "  x per channel (mean, std" << (info.moments ? ", one noise draw, seed 0" : "")
            << "):\n";
  const double count = double(info.size) * HW;
  for (int64_t c = 0; c < C; ++c) {
    double mean = sum[c] / count;
    double var = std::max(0.0, sum_sq[c] / count - mean * mean);
    std::cout << "    channel " << c << ": mean " << fmt(mean) << ", std " << fmt(std::sqrt(var))
              << "\n";
  }
}

int cmd_inspect(const std::vector<std::string>& args) {
  po::options_description desc(
      "usage: tread_data inspect FILE...\n\n"
      "Prints for each file: sample count, shape, dtype, latent space, source, scale/shift,\n"
      "label histogram and the per-channel mean and std of the normalised samples x.\n\n"
      "options");
  std::vector<std::string> files;
  desc.add_options()("help,h", "show this help")("files", po::value(&files), "HDF5 files");
  po::positional_options_description pos;
  pos.add("files", -1);
  po::variables_map vm = parse(args, desc, &pos);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  po::notify(vm);
  if (files.empty()) throw UsageError("inspect needs at least one FILE");
  for (const std::string& f : files) inspect_one(f);
  if (files.size() > 1) {
    nt::LatentDataset all(files);  // checks that the files agree
    std::cout << "all " << files.size() << " files agree: " << all.info().size
              << " samples together\n";
  }
  return 0;
}

// ---- validate -------------------------------------------------------------------------------

// Reads rows [begin, begin+n) of a dataset as `mem_type` into buf.
void read_range(hid_t dset, hid_t mem_type, int64_t begin, int64_t n, void* buf,
                const std::string& what) {
  nt::H5Id space(NT_H5_CHECK(H5Dget_space(dset), what));
  int rank = NT_H5_CHECK(H5Sget_simple_extent_ndims(space.get()), what);
  std::vector<hsize_t> dims(rank), start(rank, 0);
  NT_H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr), what);
  std::vector<hsize_t> count = dims;
  start[0] = static_cast<hsize_t>(begin);
  count[0] = static_cast<hsize_t>(n);
  NT_H5_CHECK(H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, start.data(), nullptr,
                                  count.data(), nullptr),
              what);
  hsize_t total = 1;
  for (hsize_t c : count) total *= c;
  nt::H5Id mem(NT_H5_CHECK(H5Screate_simple(1, &total, nullptr), what));
  NT_H5_CHECK(H5Dread(dset, mem_type, mem.get(), space.get(), H5P_DEFAULT, buf), what);
}

// Scans one file completely; returns an empty string when it is sound, else what is wrong.
std::string validate_one(const std::string& path, int64_t* samples) {
  nt::DatasetInfo info;
  try {
    nt::LatentDataset ds({path});  // structure, shapes, types, attributes
    info = ds.info();
  } catch (const nt::DataError& e) {
    return e.what();
  }
  *samples = info.size;
  nt::h5_silence();
  const std::string name = info.moments ? "/moments" : "/latents";
  const std::string what = "reading " + name + " of '" + path + "'";
  nt::H5Id fapl = nt::h5_read_access(what);
  nt::H5Id file(NT_H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get()), what));
  nt::H5Id data(NT_H5_CHECK(H5Dopen2(file.get(), name.c_str(), H5P_DEFAULT), what));
  nt::H5Id labels(NT_H5_CHECK(H5Dopen2(file.get(), "/labels", H5P_DEFAULT), what));
  const int64_t row = int64_t(info.moments ? 2 : 1) * info.channels * info.height * info.width;
  const int64_t rows = std::max<int64_t>(1, kChunkElems / row);
  std::vector<float> values;
  std::vector<int64_t> labs;
  std::vector<int64_t> bad_values, bad_labels, bad_label_values;
  int64_t n_bad_values = 0, n_bad_labels = 0;
  nt::Progress progress("validate '" + path + "'", info.size);
  for (int64_t begin = 0; begin < info.size; begin += rows) {
    const int64_t n = std::min(rows, info.size - begin);
    progress.update(begin);
    values.resize(n * row);
    labs.resize(n);
    read_range(data.get(), H5T_NATIVE_FLOAT, begin, n, values.data(), what);
    read_range(labels.get(), H5T_NATIVE_INT64, begin, n, labs.data(),
               "reading /labels of '" + path + "'");
    for (int64_t k = 0; k < n; ++k) {
      const float* v = values.data() + k * row;
      bool finite = true;
      for (int64_t j = 0; j < row && finite; ++j) finite = std::isfinite(v[j]);
      if (!finite && n_bad_values++ < 10) bad_values.push_back(begin + k);
      if ((labs[k] < 0 || labs[k] >= info.num_classes) && n_bad_labels++ < 10) {
        bad_labels.push_back(begin + k);
        bad_label_values.push_back(labs[k]);
      }
    }
  }
  progress.finish();
  std::ostringstream s;
  if (n_bad_values > 0) {
    s << "'" << path << "': " << n_bad_values << " sample(s) with NaN or Inf in " << name
      << ", at indices";
    for (int64_t i : bad_values) s << " " << i;
    if (n_bad_values > 10) s << " ...";
  }
  if (n_bad_labels > 0) {
    if (n_bad_values > 0) s << "\n";
    s << "'" << path << "': " << n_bad_labels << " label(s) outside [0, num_classes="
      << info.num_classes << "), at indices";
    for (size_t i = 0; i < bad_labels.size(); ++i)
      s << " " << bad_labels[i] << " (label " << bad_label_values[i] << ")";
    if (n_bad_labels > 10) s << " ...";
  }
  return s.str();
}

int cmd_validate(const std::vector<std::string>& args) {
  po::options_description desc(
      "usage: tread_data validate FILE...\n\n"
      "Reads every file completely and checks shapes and attributes, that latents/moments hold\n"
      "no NaN or Inf, and that labels lie in [0, num_classes); with several files, that they\n"
      "agree. Prints \"ok: N samples\" and exits 0, or names the first bad file and indices\n"
      "on stderr and exits 1.\n\n"
      "options");
  std::vector<std::string> files;
  desc.add_options()("help,h", "show this help")("files", po::value(&files), "HDF5 files");
  po::positional_options_description pos;
  pos.add("files", -1);
  po::variables_map vm = parse(args, desc, &pos);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  po::notify(vm);
  if (files.empty()) throw UsageError("validate needs at least one FILE");
  int64_t total = 0;
  for (const std::string& f : files) {
    int64_t samples = 0;
    std::string problem = validate_one(f, &samples);
    if (!problem.empty()) {
      std::cerr << "tread_data validate: " << problem << "\n";
      return 1;
    }
    total += samples;
  }
  if (files.size() > 1) {
    try {
      nt::LatentDataset all(files);
    } catch (const nt::DataError& e) {
      std::cerr << "tread_data validate: " << e.what() << "\n";
      return 1;
    }
  }
  std::cout << "ok: " << total << " samples";
  if (files.size() > 1) std::cout << " in " << files.size() << " files";
  std::cout << "\n";
  return 0;
}

// ---- import-npy, import-wds -----------------------------------------------------------------

// The attributes both importers write, as options (into an options struct with the members
// num_classes, latent_space, scale_factor, shift_factor and source).
template <class Options>
void add_attribute_options(po::options_description& desc, Options& o) {
  desc.add_options()("num-classes", po::value(&o.num_classes)->default_value(0),
                     "number of classes (default: the largest label + 1)")(
      "latent-space", po::value(&o.latent_space)->default_value("unknown"),
      "what the values are: pixels, sd-vae-ft-ema, ...")(
      "scale-factor", po::value(&o.scale_factor)->default_value(1.0), "x = scale * (v - shift)")(
      "shift-factor", po::value(&o.shift_factor)->default_value(0.0), "x = scale * (v - shift)")(
      "source", po::value(&o.source), "free text: where the data came from");
}

// Parses an importer's arguments: its own options in `desc` and the attribute options; false
// when --help was asked for (and printed).
template <class Options>
bool parse_import(const std::vector<std::string>& args, po::options_description& desc, Options& o) {
  add_attribute_options(desc, o);
  po::variables_map vm = parse(args, desc, nullptr);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return false;
  }
  po::notify(vm);
  if (o.num_classes < 0) throw UsageError("--num-classes must be positive");
  if (!std::isfinite(o.scale_factor) || !std::isfinite(o.shift_factor))
    throw UsageError("--scale-factor and --shift-factor must be finite numbers");
  return true;
}

// "wrote OUT: N samples<what>, /latents [N,C,H,W] dtype, K classes<note>", read back from the file.
void print_written(const std::string& out, const std::string& what, bool classes_from_labels, const std::string& note) {
  nt::LatentDataset ds({out});
  const nt::DatasetInfo& info = ds.info();
  std::cout << "wrote " << out << ": " << info.size << " samples" << what << ", " << shape_line(info) << " "
            << info.dtype << ", " << info.num_classes << " classes"
            << (classes_from_labels ? " (the largest label + 1; set --num-classes to override)" : "") << note << "\n";
}

int cmd_import_npy(const std::vector<std::string>& args) {
  po::options_description desc(
      "usage: tread_data import-npy --latents X.npy|X.npz [--labels Y.npy|Y.npz] [--moments]\n"
      "                             --out X.h5 [--num-classes K] [--latent-space S]\n"
      "                             [--scale-factor F] [--shift-factor F] [--source TEXT]\n\n"
      "Converts numpy arrays into a dataset file: latents (N,C,H,W) -> /latents, or with\n"
      "--moments (N,2C,H,W) mean||logvar -> /moments; float16 stays float16, float32 and\n"
      "float64 become float32; labels (N,) of any integer type -> /labels int64. Accepts .npy\n"
      "(format versions 1-3, C order) and .npz archives (np.savez, np.savez_compressed).\n"
      "The file is written contiguous and uncompressed (the loader's fast pread path), as\n"
      "OUT.tmp, renamed to OUT when complete.\n\n"
      "options");
  nt::NpyImportOptions o;
  desc.add_options()("help,h", "show this help")(
      "latents", po::value(&o.latents)->required(), ".npy or .npz with the latents or moments")(
      "labels", po::value(&o.labels),
      ".npy or .npz with the labels (default: the --latents .npz)")(
      "latents-key", po::value(&o.latents_key),
      ".npz array of the latents (default 'latents', else the first array)")(
      "labels-key", po::value(&o.labels_key),
      ".npz array of the labels (default 'labels', else the second array of the --latents "
      ".npz or the first of another)")(
      "moments", po::bool_switch(&o.moments), "the data are moments (mean || logvar)")(
      "out", po::value(&o.out)->required(), "output HDF5 file");
  if (!parse_import(args, desc, o)) return 0;  // --help
  nt::NpyImportResult r = nt::import_npy(o);
  print_written(o.out, "", r.num_classes_from_labels, "");
  return 0;
}

int cmd_import_wds(const std::vector<std::string>& args) {
  po::options_description desc(
      "usage: tread_data import-wds --shards DIR|X.tar... [--match TEXT] --out X.h5\n"
      "                             [--num-classes K] [--latent-space S] [--scale-factor F]\n"
      "                             [--shift-factor F] [--prescaled] [--source TEXT]\n\n"
      "Converts the WebDataset shards the Python reference (CompVis/tread) trains on into a\n"
      "dataset file: each sample's <key>.latent.npy (C,H,W) -> a row of /latents (float16 stays\n"
      "float16, float32 and float64 become float32) and <key>.cls (its class as text) ->\n"
      "/labels. A folder stands for its .tar files whose names contain --match, sorted; samples\n"
      "keep the shards' order. Plain (uncompressed) tar files only. --prescaled: the values are\n"
      "already scale * (z - shift), as the reference's are (its sampler decodes x / 0.18215);\n"
      "they are stored as they are, marked prescaled = 1: training reads them unchanged, and\n"
      "samples decode as x / scale + shift:\n"
      "  tread_data import-wds --shards imagenet256_latents_wds --match ImageNetTrain-train \\\n"
      "    --out imagenet256.h5 --latent-space sd-vae-ft-ema --scale-factor 0.18215 --prescaled\n"
      "The file is written contiguous and uncompressed, as OUT.tmp, renamed to OUT when complete.\n\n"
      "options");
  nt::WdsImportOptions o;
  desc.add_options()("help,h", "show this help")(
      "shards", po::value(&o.shards)->multitoken()->required(), "tar shards and folders of them")(
      "match", po::value(&o.match)->default_value(""), "a folder's shards: names containing this")(
      "out", po::value(&o.out)->required(), "output HDF5 file")(
      "prescaled", po::bool_switch(&o.prescaled), "the shards hold scale * (z - shift): training takes them as they are");
  if (!parse_import(args, desc, o)) return 0;  // --help
  nt::WdsImportResult r = nt::import_wds(o);
  print_written(o.out, " from " + std::to_string(r.shards) + " shard(s)", r.num_classes_from_labels,
                r.ignored_members ? ", " + std::to_string(r.ignored_members) + " other member(s) ignored" : "");
  return 0;
}

// ---- bench ----------------------------------------------------------------------------------

int cmd_bench(const std::vector<std::string>& args) {
  po::options_description desc(
      "usage: tread_data bench FILE... --batch B --threads T --seconds S [--depth D]\n"
      "                        [--world W] [--seed N]\n\n"
      "Runs the prefetch loader over the global sampler on the files (rank 0 of W) for S\n"
      "seconds, consuming batches as fast as it delivers them, and prints a throughput line\n"
      "about once a second; the last line is `samples/s: X` (samples of this rank's part).\n\n"
      "options");
  std::vector<std::string> files;
  int64_t batch = 256;
  int threads = 2, depth = 8, world = 1;
  double seconds = 5;
  uint64_t seed = 0;
  desc.add_options()("help,h", "show this help")("files", po::value(&files), "HDF5 files")(
      "batch", po::value(&batch)->default_value(256), "global batch size B")(
      "threads", po::value(&threads)->default_value(2), "reader threads")(
      "depth", po::value(&depth)->default_value(8), "batches read ahead")(
      "seconds", po::value(&seconds)->default_value(5.0), "how long to measure")(
      "world", po::value(&world)->default_value(1), "trainer ranks W (this is rank 0)")(
      "seed", po::value(&seed)->default_value(0), "sampler and noise seed");
  po::positional_options_description pos;
  pos.add("files", -1);
  po::variables_map vm = parse(args, desc, &pos);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  po::notify(vm);
  if (files.empty()) throw UsageError("bench needs at least one FILE");
  if (!(seconds > 0)) throw UsageError("--seconds must be positive");
  if (threads < 1 || depth < 1) throw UsageError("--threads and --depth must be at least 1");
  nt::LatentDataset ds(files);
  const nt::DatasetInfo& info = ds.info();
  nt::GlobalSampler sampler = [&] {
    try {
      return nt::GlobalSampler(info.size, batch, seed, 0, world);
    } catch (const std::invalid_argument& e) {
      throw UsageError(e.what());
    }
  }();
  std::cout << "bench: " << info.size << " samples, " << shape_line(info) << " " << info.dtype
            << ", read path " << info.read_path << "; batch " << batch << " (rank part "
            << batch / world << "), " << threads << " threads, depth " << depth << "\n";
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  nt::PrefetchLoader loader(ds, sampler, nt::LoaderState{}, threads, depth,
                            [seed](int64_t epoch) { return nt::mix_seed(seed, static_cast<uint64_t>(epoch)); },
                            /*pin_memory=*/false);
  int64_t samples = 0, batches = 0, window_samples = 0;
  double wait = 0, window_wait = 0;
  Clock::time_point window = start;
  double elapsed = 0;
  double checksum = 0;  // touches the data so the consumer does real work, as a trainer would
  for (;;) {
    nt::Batch b = loader.next();
    checksum += b.x.data_ptr<float>()[0];
    samples += b.x.size(0);
    window_samples += b.x.size(0);
    ++batches;
    wait += b.wait_seconds;
    window_wait += b.wait_seconds;
    const Clock::time_point now = Clock::now();
    elapsed = std::chrono::duration<double>(now - start).count();
    const double w = std::chrono::duration<double>(now - window).count();
    if (w >= 1.0 || elapsed >= seconds) {
      std::cout << "  " << fmt(elapsed, 3) << " s: " << rate(window_samples / w)
                << " samples/s, consumer waited " << fmt(100 * window_wait / w, 3)
                << "% of the time, epoch " << b.epoch << " batch " << b.batch << "\n";
      window = now;
      window_samples = 0;
      window_wait = 0;
    }
    if (elapsed >= seconds) break;
  }
  std::cout << "total: " << samples << " samples in " << batches << " batches, " << fmt(elapsed, 4)
            << " s, consumer waited " << fmt(wait, 3) << " s (checksum " << fmt(checksum, 3)
            << ")\n";
  std::cout << "samples/s: " << rate(samples / elapsed) << "\n";
  return 0;
}

int run(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << usage();
    return 1;
  }
  const std::string cmd = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    std::cout << usage();
    return 0;
  }
  try {
    if (cmd == "import-mnist") return cmd_import_mnist(args);
    if (cmd == "inspect") return cmd_inspect(args);
    if (cmd == "validate") return cmd_validate(args);
    if (cmd == "import-npy") return cmd_import_npy(args);
    if (cmd == "import-wds") return cmd_import_wds(args);
    if (cmd == "bench") return cmd_bench(args);
    for (const auto& c : nt::tool_commands())
      if (c.name == cmd) return c.run(args);
  } catch (const po::error& e) {
    throw UsageError(std::string(e.what()));
  }
  throw UsageError("unknown command '" + cmd + "'");
}

}  // namespace

int main(int argc, char** argv) {
  const std::string cmd = argc >= 2 ? argv[1] : "";
  const auto extra = nt::tool_commands();
  const bool known = cmd == "import-mnist" || cmd == "inspect" || cmd == "validate" ||
                     cmd == "import-npy" || cmd == "import-wds" || cmd == "bench" ||
                     std::any_of(extra.begin(), extra.end(), [&](const nt::ToolCommand& c) { return c.name == cmd; });
  try {
    return run(argc, argv);
  } catch (const UsageError& e) {
    std::cerr << "tread_data: " << e.what() << "; see `tread_data " << (known ? cmd + " " : "")
              << "--help`\n";
  } catch (const std::exception& e) {
    std::cerr << "tread_data " << cmd << ": error: " << e.what() << "\n";
  } catch (...) {
    std::cerr << "tread_data " << cmd << ": error: unknown exception\n";
  }
  return 1;
}
