# make demo-venv passes this file to llama-cpp-python's from-source build as CMAKE_PROJECT_INCLUDE:
# CMake runs it after every project() of that build. It trims the build to what kdc loads, the
# llama and ggml libraries, so that a fresh 2-core machine spends minutes less compiling:
# - no llama "common" library (nor the cpp-httplib it pulls in): it serves llama.cpp's tools and the
#   multimodal library, which kdc does not use (LLAVA_BUILD=OFF drops the latter);
# - ggml (the tensor kernels, where the time goes) keeps -O3; the rest of libllama (model loading,
#   graph building, vocab, grammar) is built at -O1, which decodes at the same speed.
if(PROJECT_NAME STREQUAL "ggml")
  set(CMAKE_C_FLAGS_RELEASE "-O3 -DNDEBUG")
  set(CMAKE_CXX_FLAGS_RELEASE "-O3 -DNDEBUG")
elseif(PROJECT_NAME STREQUAL "llama.cpp")
  set(LLAMA_BUILD_COMMON OFF)
  set(CMAKE_C_FLAGS_RELEASE "-O1 -DNDEBUG")
  set(CMAKE_CXX_FLAGS_RELEASE "-O1 -DNDEBUG")
endif()
