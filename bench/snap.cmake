# Snapshot-metadata benchmark (bench/meta_growth.c): include() this from
# bench/CMakeLists.txt. Run: <build>/bench/meta_growth [messages [hours]]
# (defaults 100000 720); it prints the 720-snapshot metadata ratio (B9).
add_executable(meta_growth ${CMAKE_CURRENT_LIST_DIR}/meta_growth.c)
target_link_libraries(meta_growth PRIVATE coffer_core)
