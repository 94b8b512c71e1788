# Benchmark programs, included from bench/CMakeLists.txt. ctest never runs
# them, except that tests/unit/corpus_test runs gen_corpus from the build
# tree (it looks for ../bench/gen_corpus beside its own binary).
#   gen_corpus - deterministic Maildir++/mbox corpus generator
#   pipeline   - read -> chunk -> ID -> compress -> seal, timed
#   bench/run-pipeline.sh runs both beside zstd and b2sum.
add_executable(gen_corpus ${CMAKE_CURRENT_LIST_DIR}/gen_corpus.c)
target_link_libraries(gen_corpus PRIVATE coffer_core m)
if(TARGET corpus_test)
    add_dependencies(corpus_test gen_corpus)
endif()
if(TARGET agent_state_test)
    add_dependencies(agent_state_test gen_corpus)
endif()

# The pipeline needs the chunker, MIME scanner and envelope modules.
if(EXISTS ${CMAKE_SOURCE_DIR}/core/chunk.c AND
   EXISTS ${CMAKE_SOURCE_DIR}/core/mime.c AND
   EXISTS ${CMAKE_SOURCE_DIR}/core/env.c AND
   EXISTS ${CMAKE_CURRENT_LIST_DIR}/pipeline.c)
    add_executable(pipeline ${CMAKE_CURRENT_LIST_DIR}/pipeline.c)
    target_link_libraries(pipeline PRIVATE coffer_keys)
endif()
