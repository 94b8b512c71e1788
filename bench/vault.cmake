# Vault load benchmark (bench/vault_bench.c): include() this from
# bench/CMakeLists.txt. Never run by ctest; bench/run-vault.sh starts a
# vault with a throwaway PKI and runs it (upload MB/s with 1 and 8 clients,
# Missing latency, vault RSS).
if(TARGET coffer-vault)
    add_executable(vault_bench ${CMAKE_CURRENT_LIST_DIR}/vault_bench.c)
    target_link_libraries(vault_bench PRIVATE coffer_core Threads::Threads)
    add_dependencies(vault_bench coffer-vault)
endif()
