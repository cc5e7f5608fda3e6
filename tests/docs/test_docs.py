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

    def readline_completes(self, line, env=None, load=None):
        """What a real bash would let readline insert for `line` (being
        completed at its end): the words split as bash splits them (with "="
        a word of its own, COMP_WORDBREAKS), the completion function run,
        and each candidate put in place of the text after the last word
        break. Returns the set of lines a candidate would produce."""
        if not os.path.exists("/usr/share/bash-completion/bash_completion"):
            self.skipTest("bash-completion is not installed")
        import re
        import shlex
        words = []
        for token in re.split(r"\s+", line.strip()) + ([""] if line.endswith(" ") else []):
            parts = re.split(r"(=)", token)
            words.extend(p for p in parts if p != "") if token else words.append("")
        if line.endswith("="):
            words.append("")
        source = (f"_completion_loader {shlex.quote(load)}" if load
                  else f"source {shlex.quote(path('completions', 'splicefs.bash'))}")
        script = f"""
source /usr/share/bash-completion/bash_completion
{source}
COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})
COMP_CWORD={len(words) - 1}
COMP_LINE={shlex.quote(line)}
COMP_POINT={len(line)}
fn=$(complete -p {shlex.quote(words[0])} | sed -E 's/.*-F ([^ ]+).*/\\1/')
$fn {shlex.quote(words[0])}
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
        out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True,
                             env=env).stdout.splitlines()
        cut = max(line.rfind(c) for c in " =:") + 1
        return {line[:cut] + c for c in out}

    def test_bash_as_readline_inserts_it(self):
        self.assertEqual(self.readline_completes("splicefs -o cache="),
                         {f"splicefs -o cache={v}" for v in ("auto", "always", "never")})
        self.assertEqual(self.readline_completes("splicefs -o cache=al"), {"splicefs -o cache=always"})
        self.assertEqual(self.readline_completes("splicefs -o splice=all,ca"), {"splicefs -o splice=all,cache="})
        self.assertEqual(self.readline_completes("splicefs -o splice=all,cache=n"),
                         {"splicefs -o splice=all,cache=never"})
        # What was typed stays: every candidate extends it.
        for line in ("splicefs /dev/lo", "splicefs /dev/", "splicefs st"):
            got = self.readline_completes(line)
            self.assertTrue(all(c.startswith(line) for c in got), (line, sorted(got)[:5]))
        self.assertIn("splicefs stats", self.readline_completes("splicefs st"))

    def test_bash_loads_for_mount_splicefs_in_a_fresh_shell(self):
        # bash-completion loads completions by command name: installed, both
        # names must complete.
        import tempfile
        prefix = tempfile.mkdtemp(prefix="splicefs-install-")
        try:
            # Staged (DESTDIR) under the Debian prefix: nothing outside it is touched.
            subprocess.run(["cmake", "--install", os.path.dirname(os.path.abspath(ARGS.binary)), "--prefix", "/usr"],
                           check=True, capture_output=True, env=dict(os.environ, DESTDIR=prefix))
            env = dict(os.environ, XDG_DATA_DIRS=os.path.join(prefix, "usr", "share"))
            for command in ("splicefs", "mount.splicefs"):
                self.assertEqual(self.readline_completes(f"{command} --spl", env=env, load=command),
                                 {f"{command} --splice", f"{command} --splice-move"})
        finally:
            import shutil
            shutil.rmtree(prefix, ignore_errors=True)

    def test_bash(self):
        got = self.bash_complete(["splicefs", "--"])
        for option in help_options():
            self.assertIn(option, got)
        self.assertEqual(sorted(self.bash_complete(["splicefs", "--splice", ""])), ["all", "off", "read", "write"])
        self.assertIn("splice=", self.bash_complete(["splicefs", "-o", "sp"]))
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
