"""Progress of long library work (a reconcile, an import, a policy applied to
many volumes), told to whoever shows it: the CLI draws a bar on a terminal."""


class Progress:
    """Counts the items done of a known total; ``report(done, total)``, if
    given, hears of each step."""

    def __init__(self, total, report=None):
        self.total, self.done, self.report = total, 0, report

    def advance(self, count=1):
        self.done += count
        if self.report is not None:
            self.report(self.done, self.total)
