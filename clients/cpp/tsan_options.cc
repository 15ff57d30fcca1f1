// clients/cpp/tsan_options.cc: ThreadSanitizer defaults for the programs
// that use AttachedStream (linked alwayslink; unused without TSan).
//
// gRPC 1.51's callback client API runs its completion queue on
// 'nexting_thread's (libgpr) that gRPC never joins, so TSan reports them as
// leaked at every exit. They are gRPC's; the client library joins every
// thread it starts (AttachedStream's worker in Close()). Races are still
// reported, as are deadlocks.
extern "C" const char* __tsan_default_options() { return "report_thread_leaks=0"; }
