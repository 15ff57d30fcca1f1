// tools/sanitizer_defaults.cc: linked (alwayslink) into every test and the
// daemon. The sanitizer runtimes look these hooks up at start-up; without a
// sanitizer they are unused functions.
//
// Debian's gRPC, Abseil, protobuf and OpenSSL are not built with
// -fsanitize=thread, so TSan cannot see their internal synchronisation
// (absl::Mutex, gpr_mu, ...) and reports false races inside them. Races whose
// stack passes through those shared objects are hidden; races entirely in
// kmcld's own code still fail the run.
extern "C" const char* __tsan_default_suppressions() {
  return "race:libabsl_\n"
         "race:libgrpc\n"
         "race:libgpr\n"
         "race:libupb\n"
         "race:libcrypto\n"
         "race:libssl\n"
         "race:libprotobuf\n"
         "race:libre2\n"
         "race:libcares\n"
         // libstdc++'s out-of-line shared_ptr release
         // (_Sp_counted_base::_M_release_last_use_cold) is a weak symbol that
         // libspdlog and libgrpc++ both export; libspdlog loads first, so
         // gRPC's own releases run libspdlog's uninstrumented copy, and TSan
         // reports the final delete on a gRPC thread with only a libspdlog
         // frame (seen in security_test).
         "race:libspdlog\n"
         // absl::Mutex's deadlock detector and condition waits live in
         // libabsl_synchronization; their lock-order reports are not ours.
         "deadlock:libabsl_\n";
}
