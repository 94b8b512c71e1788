# The chunker's benchmarks (core/chunk.c, core/mime.c): never run by ctest.
#   chunk_speed [MiB]          single-core chunking throughput
#   chunk_sweep [DIR]          dedup ratio per average size, with and without
#                              MIME hints, over DIR or a built-in corpus
add_executable(chunk_speed ${CMAKE_CURRENT_LIST_DIR}/chunk_speed.c)
target_link_libraries(chunk_speed PRIVATE coffer_core)
add_executable(chunk_sweep ${CMAKE_CURRENT_LIST_DIR}/chunk_sweep.c)
target_link_libraries(chunk_sweep PRIVATE coffer_core)
