"""The option list of --help must appear in the man page and in every
shell's completions, and the man pages must lint clean. Run as
    python3 test_docs.py --binary PATH/splicefs --source-dir REPO"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import unittest

ARGS = None


def options_in(help_text):
    """Long options from the option lines of a help text (not its prose)."""
    found = set()
    for line in help_text.splitlines():
        m = re.match(r"\s+(?:-\w,)?(--[a-z][a-z-]+)", line)
        if m:
            found.add(m.group(1))
    return sorted(found)


def help_options():
    out = subprocess.run([ARGS.binary, "--help"], capture_output=True, text=True, check=True).stdout
    options = options_in(out)
    assert "--splice" in options and "--max-reply" in options, options
    return options


def stats_help_options():
    out = subprocess.run([ARGS.binary, "stats", "--help"], capture_output=True, text=True, check=True).stdout
    return options_in(out)


def path(*parts):
    return os.path.join(ARGS.source_dir, *parts)


class ManPages(unittest.TestCase):
    def test_every_option_is_documented(self):
        with open(path("man", "splicefs.1")) as f:
            page = f.read().replace("\\-", "-")
        for option in help_options() + stats_help_options():
            self.assertIn(option, page)
        for mode in ("off", "read", "write", "all"):
            self.assertIn(f".B {mode}", page)

    def test_lint(self):
        for page in ("splicefs.1", "mount.splicefs.8"):
            if shutil.which("mandoc"):
                r = subprocess.run(["mandoc", "-T", "lint", "-W", "warning", path("man", page)], capture_output=True,
                                   text=True)
                self.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""), page)
            if shutil.which("groff"):
                r = subprocess.run(["groff", "-man", "-ww", "-z", path("man", page)], capture_output=True, text=True)
                self.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""), page)


class Completions(unittest.TestCase):
    def bash_complete(self, words):
        """COMPREPLY for a command line whose last word (maybe "") is being completed."""
        if not os.path.exists("/usr/share/bash-completion/bash_completion"):
            self.skipTest("bash-completion is not installed")
        import shlex
        line = " ".join(words)
        script = f"""
source /usr/share/bash-completion/bash_completion
source {shlex.quote(path('completions', 'splicefs.bash'))}
COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})
COMP_CWORD={len(words) - 1}
COMP_LINE={shlex.quote(line)}
COMP_POINT={len(line)}
_splicefs splicefs
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.split()

    def test_bash(self):
        got = self.bash_complete(["splicefs", "--"])
        for option in help_options():
            self.assertIn(option, got)
        self.assertEqual(sorted(self.bash_complete(["splicefs", "--splice", ""])), ["all", "off", "read", "write"])
        self.assertIn("splice=", self.bash_complete(["splicefs", "-o", "sp"]))
        self.assertIn("cache=never", self.bash_complete(["splicefs", "-o", "cache=n"]))
        self.assertIn("stats", self.bash_complete(["splicefs", "st"]))
        for option in stats_help_options():
            self.assertIn(option, self.bash_complete(["splicefs", "stats", "--"]))

    def test_fish(self):
        if shutil.which("fish") is None:
            self.skipTest("fish is not installed")

        def complete(line):
            script = f"source {path('completions', 'splicefs.fish')}; complete -C '{line}'"
            out = subprocess.run(["fish", "-c", script], capture_output=True, text=True, check=True).stdout
            return [l.split("\t")[0] for l in out.splitlines()]
        got = complete("splicefs --")
        for option in help_options():
            self.assertIn(option, got)
        self.assertEqual(sorted(complete("splicefs --splice ")), ["all", "off", "read", "write"])
        self.assertIn("stats", complete("splicefs "))
        for option in stats_help_options():
            self.assertIn(option, complete("splicefs stats --"))

    def test_zsh(self):
        if shutil.which("zsh") is None:
            self.skipTest("zsh is not installed")
        f = path("completions", "_splicefs")
        self.assertEqual(subprocess.run(["zsh", "-n", f]).returncode, 0)
        out = subprocess.run(["zsh", "-f", "-c", f"fpath=({path('completions')} $fpath); autoload -U compinit; "
                              "compinit -u -D; print -r -- ${_comps[splicefs]} ${_comps[mount.splicefs]}"],
                             capture_output=True, text=True).stdout.split()
        self.assertEqual(out, ["_splicefs", "_splicefs"])
        with open(f) as fh:
            text = fh.read()
        for option in help_options() + stats_help_options():
            self.assertIn(option, text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--source-dir", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)
