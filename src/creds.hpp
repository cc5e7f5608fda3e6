// The identity the daemon acts with. A root daemon runs a thread with a FUSE
// caller's filesystem ids so that files it creates belong to the caller and
// the source applies its own permission checks for that caller (as
// natively), and so that changes to setuid/setgid files clear those bits as
// the caller's own changes would.
#pragma once

#include "filesystem.hpp"

#include <linux/fuse.h>
#include <sys/types.h>

#include <optional>
#include <vector>

namespace splicefs {

class CallerCreds {
  public:
    CallerCreds(Filesystem& fs, fuse_req_t req);
    // For requests the data path answers itself, from their raw header.
    CallerCreds(Filesystem& fs, const fuse_in_header& in);
    ~CallerCreds();
    CallerCreds(const CallerCreds&) = delete;
    CallerCreds& operator=(const CallerCreds&) = delete;
    // The switch to the caller's ids did not happen (a daemon without
    // CAP_SETUID/CAP_SETGID): the operation must be refused with EPERM, not
    // done as the daemon.
    bool failed() const { return failed_; }

  private:
    void switch_to(uid_t uid, gid_t gid, const std::vector<gid_t>& groups);
    Filesystem& fs_;
    bool switched_ = false;
    bool failed_ = false;
};

// Creates with the caller's umask while it lives, when the kernel left the
// umask to the server (FUSE_CAP_DONT_MASK, negotiated with POSIX ACLs): the
// source then applies it, or a default ACL of the parent directory instead,
// as natively. Workers have a umask of their own (unshare(CLONE_FS)).
class CallerUmask {
  public:
    CallerUmask(const Filesystem& fs, fuse_req_t req);
    ~CallerUmask();
    CallerUmask(const CallerUmask&) = delete;
    CallerUmask& operator=(const CallerUmask&) = delete;

  private:
    bool set_ = false;
    mode_t previous_ = 0;
};

// Runs the calling thread without CAP_FSETID while it lives (capabilities
// are per thread): the source then clears setuid/setgid bits on a write as
// it would for an unprivileged writer.
class WithoutFsetid {
  public:
    WithoutFsetid();
    ~WithoutFsetid();
    WithoutFsetid(const WithoutFsetid&) = delete;
    WithoutFsetid& operator=(const WithoutFsetid&) = delete;

  private:
    bool dropped_ = false;
};

// The credentials the kernel records for a passthrough backing file
// (FUSE_DEV_IOC_BACKING_OPEN saves the caller's) and uses for every read and
// write it makes through it: the daemon's fsuid, but no supplementary
// groups, an fsgid no file has, and no CAP_FSETID, so a write through it
// clears setuid and setgid bits as for an unprivileged writer outside the
// file's group, never keeping one the writer's own write would clear.
class BackingFileCreds {
  public:
    explicit BackingFileCreds(const std::vector<gid_t>& daemon_groups);
    ~BackingFileCreds();
    BackingFileCreds(const BackingFileCreds&) = delete;
    BackingFileCreds& operator=(const BackingFileCreds&) = delete;
    bool failed() const { return failed_; }

  private:
    const std::vector<gid_t>& daemon_groups_;
    gid_t previous_fsgid_ = 0;
    bool failed_ = false;
    WithoutFsetid no_fsetid_;
};

// A change to a file's data (WRITE, truncate, fallocate) made while it has
// a setuid or setgid bit runs with the caller's ids, and so without
// CAP_FSETID: the source then clears the bits exactly as for the caller's own
// change (the kernel's FUSE client clears setgid only with group execute
// set, and on direct I/O leaves it all to the server). A root caller's
// direct-I/O WRITE marked FUSE_WRITE_KILL_SUIDGID (it lacks CAP_FSETID) runs
// without CAP_FSETID. Changes to files without such bits cost one fstat.
class ModifyAsCaller {
  public:
    ModifyAsCaller(Filesystem& fs, fuse_req_t req, int fd);
    ModifyAsCaller(Filesystem& fs, const fuse_in_header& in, const fuse_write_in& arg, int fd);
    ModifyAsCaller(const ModifyAsCaller&) = delete;
    ModifyAsCaller& operator=(const ModifyAsCaller&) = delete;
    bool failed() const; // as CallerCreds::failed()

  private:
    std::optional<CallerCreds> creds_;
    std::optional<WithoutFsetid> no_fsetid_;
};

} // namespace splicefs
