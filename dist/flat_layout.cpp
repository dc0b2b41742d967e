#include "dist/flat_layout.h"

#include <torch/torch.h>

#include <map>

namespace nt {

int64_t FlatLayout::numel() const {
  int64_t n = 0;
  for (const auto& u : units) n += u.numel;
  return n;
}

nlohmann::json FlatLayout::to_json() const {
  nlohmann::json j;
  j["world"] = world;
  j["units"] = nlohmann::json::array();
  for (const auto& u : units) {
    nlohmann::json ju{{"name", u.name}, {"numel", u.numel}, {"padded", u.padded}};
    ju["params"] = nlohmann::json::array();
    for (const auto& p : u.params)
      ju["params"].push_back({{"name", p.name}, {"shape", p.shape}, {"offset", p.offset}, {"numel", p.numel}});
    j["units"].push_back(ju);
  }
  return j;
}

FlatLayout FlatLayout::from_json(const nlohmann::json& j) {
  FlatLayout l;
  l.world = j.at("world").get<int>();
  for (const auto& ju : j.at("units")) {
    FlatUnit u;
    u.name = ju.at("name").get<std::string>();
    u.numel = ju.at("numel").get<int64_t>();
    u.padded = ju.at("padded").get<int64_t>();
    u.world = l.world;
    for (const auto& jp : ju.at("params"))
      u.params.push_back({jp.at("name").get<std::string>(), jp.at("shape").get<std::vector<int64_t>>(),
                          jp.at("offset").get<int64_t>(), jp.at("numel").get<int64_t>()});
    l.units.push_back(std::move(u));
  }
  return l;
}

std::string unit_of(const std::string& name) {
  if (name.rfind("blocks.", 0) == 0) {
    const auto dot = name.find('.', 7);
    return name.substr(0, dot);
  }
  return "root";
}

FlatLayout make_layout(torch::nn::Module& model, int world) {
  FlatLayout layout;
  layout.world = world;
  std::map<std::string, size_t> index;
  for (const auto& item : model.named_parameters()) {
    if (!item.value().requires_grad()) continue;  // pos_embed: fixed, not trained
    const std::string u = unit_of(item.key());
    if (!index.count(u)) {
      index[u] = layout.units.size();
      layout.units.push_back(FlatUnit{u, {}, 0, 0, world});
    }
    FlatUnit& unit = layout.units[index[u]];
    FlatParam p{item.key(), item.value().sizes().vec(), unit.numel, item.value().numel()};
    unit.numel += p.numel;
    unit.params.push_back(std::move(p));
  }
  // Root first, then blocks in order: the order in which forward uses them.
  std::stable_sort(layout.units.begin(), layout.units.end(), [](const FlatUnit& a, const FlatUnit& b) {
    auto key = [](const FlatUnit& u) { return u.name == "root" ? -1 : std::stoi(u.name.substr(7)); };
    return key(a) < key(b);
  });
  for (auto& u : layout.units) u.padded = (u.numel + world - 1) / world * world;
  return layout;
}

namespace {
std::map<std::string, at::Tensor> param_map(torch::nn::Module& model) {
  std::map<std::string, at::Tensor> m;
  for (const auto& item : model.named_parameters()) m[item.key()] = item.value();
  return m;
}
}  // namespace

std::vector<at::Tensor> gather_params(torch::nn::Module& model, const FlatLayout& layout) {
  torch::NoGradGuard no_grad;
  auto params = param_map(model);
  std::vector<at::Tensor> flat;
  for (const auto& u : layout.units) {
    auto buf = torch::zeros({u.padded}, torch::TensorOptions().dtype(at::kFloat).device(params.begin()->second.device()));
    for (const auto& p : u.params) buf.narrow(0, p.offset, p.numel).copy_(params.at(p.name).reshape({-1}));
    flat.push_back(buf);
  }
  return flat;
}

void bind_params(torch::nn::Module& model, const FlatLayout& layout, std::vector<at::Tensor>& flat) {
  torch::NoGradGuard no_grad;
  auto params = param_map(model);
  for (size_t i = 0; i < layout.units.size(); ++i)
    for (const auto& p : layout.units[i].params)
      params.at(p.name).set_data(flat[i].narrow(0, p.offset, p.numel).view(p.shape));
}

void load_flat(torch::nn::Module& model, const FlatLayout& layout, const std::vector<at::Tensor>& flat) {
  torch::NoGradGuard no_grad;
  auto params = param_map(model);
  for (size_t i = 0; i < layout.units.size(); ++i)
    for (const auto& p : layout.units[i].params) {
      auto it = params.find(p.name);
      TORCH_CHECK(it != params.end(), "the model has no parameter '", p.name, "'");
      it->second.copy_(flat[i].narrow(0, p.offset, p.numel).view(p.shape));
    }
}

std::vector<at::Tensor> gather_grads(torch::nn::Module& model, const FlatLayout& layout) {
  auto params = param_map(model);
  std::vector<at::Tensor> flat;
  for (const auto& u : layout.units) {
    std::vector<at::Tensor> parts;
    for (const auto& p : u.params) {
      const auto& g = params.at(p.name).grad();
      parts.push_back(g.defined() ? g.reshape({-1}).to(at::kFloat)
                                  : torch::zeros({p.numel}, params.at(p.name).options().dtype(at::kFloat)));
    }
    if (u.padded > u.numel) parts.push_back(torch::zeros({u.padded - u.numel}, parts[0].options()));
    flat.push_back(at::cat(parts));
  }
  return flat;
}

std::vector<at::Tensor> bind_grads(torch::nn::Module& model, const FlatLayout& layout) {
  auto params = param_map(model);
  std::vector<at::Tensor> bufs;
  for (const auto& u : layout.units) {
    const auto& first = params.at(u.params.at(0).name);
    auto buf = torch::zeros({u.padded}, first.options());  // the parameters' dtype (gradients must match it)
    for (const auto& p : u.params) params.at(p.name).mutable_grad() = buf.narrow(0, p.offset, p.numel).view(p.shape);
    bufs.push_back(buf);
  }
  return bufs;
}

}  // namespace nt
