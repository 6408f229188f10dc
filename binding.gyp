{
  "targets": [
    {
      "target_name": "dmkit_native",
      "sources": ["native/addon.c", "native/crc32c.c"],
      "cflags_c": ["-std=gnu11", "-O3", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
