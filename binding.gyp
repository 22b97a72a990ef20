{
  "targets": [
    {
      "target_name": "tsvirtio",
      "sources": [
        "kernel/native/addon.cc",
        "kernel/native/mem.cc",
        "kernel/native/io.cc",
        "kernel/native/watch.cc",
        "kernel/native/clock.cc",
        "kernel/native/entropy.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED", "_GNU_SOURCE"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
