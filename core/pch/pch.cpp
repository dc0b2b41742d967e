// Carries the shared precompiled header <torch/torch.h> (see the top CMakeLists.txt).
