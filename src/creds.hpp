// Runs the calling thread with a FUSE caller's filesystem ids, so that files
// created through a root daemon belong to the caller and the source applies
// its own permission checks for that caller (as natively).
#pragma once

#include "filesystem.hpp"

namespace splicefs {

class CallerCreds {
  public:
    CallerCreds(Filesystem& fs, fuse_req_t req);
    ~CallerCreds();
    CallerCreds(const CallerCreds&) = delete;
    CallerCreds& operator=(const CallerCreds&) = delete;

  private:
    Filesystem& fs_;
    bool switched_ = false;
};

} // namespace splicefs
