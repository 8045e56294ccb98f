from django.core.management.base import BaseCommand, CommandError

from workflows.audit import unchained
from workflows.audit_chain import DirectoryTarget, MultiTarget, default_target, verify_all


class Command(BaseCommand):
    help = (
        "Walk the whole audit hash chain, name the first broken link, and check the chain against "
        "the latest valid anchor (REVIEWDESK_AUDIT_ANCHOR_DIR, signed with REVIEWDESK_AUDIT_ANCHOR_KEY)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--anchor-dir", action="append", default=[], metavar="FOLDER",
            help="also check against the anchors saved in FOLDER (e.g. the attachments of the anchor e-mails); "
                 "may be given more than once")

    def handle(self, *args, **options):
        target = default_target()
        if options["anchor_dir"]:
            target = MultiTarget([target, *(DirectoryTarget(folder) for folder in options["anchor_dir"])])
        report = verify_all(target)
        walk, problems = report.walk, []
        if not walk.ok:
            problems.append(
                f"audit chain broken at event {walk.broken_at}: {walk.reason} "
                f"({walk.checked} events before it verified)"
            )
        if report.anchors is not None:
            problems.extend(report.anchors.problems)
        if report.stale.count:
            # Not a broken chain: events committed but not linked yet, for longer than the chainer
            # ever needs (it runs within about a second of each commit).
            problems.append(f"{report.stale} (is the chainer running? manage.py chain_audit links them)")
        if problems:
            raise CommandError("\n".join(problems))
        self.stdout.write(f"audit chain ok: {walk.checked} events, head {walk.head}")
        waiting = unchained()
        if waiting.count:
            self.stdout.write(f"not in the chain yet: {waiting} (linked within seconds; not verified here)")
        if report.anchors is None:
            self.stderr.write(f"warning: {report.note}")
        elif report.anchors.anchor is None:
            self.stderr.write("warning: no anchor yet (run manage.py anchor_audit): a cut tail or a re-hashed "
                              "suffix cannot be detected")
        else:
            anchor = report.anchors.anchor
            self.stdout.write(f"anchor ok: event {anchor.event_id} ({anchor.count} events, {anchor.anchored_at}) "
                              f"from {anchor.location}")
