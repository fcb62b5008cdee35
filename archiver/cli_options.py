"""The options every command shares and how they parse: logging options after any subcommand,
topics that accumulate, and one-value options that may be given once."""

from __future__ import annotations

import click

from archiver import terminal

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _remember_logging(ctx: click.Context, param: click.Parameter, value) -> None:
    """Logging options may come before and after the subcommand: counts add up, a level wins."""
    chosen = ctx.meta.setdefault("archiver.logging", {"verbose": 0, "quiet": 0, "log_level": None})
    if param.name in ("verbose", "quiet"):
        chosen[param.name] += value or 0
    elif value:
        chosen["log_level"] = value


def _logging_options() -> list[click.Option]:
    return [
        click.Option(["-v", "--verbose"], count=True, expose_value=False, callback=_remember_logging,
                     help="More logging: -v INFO, -vv DEBUG (libraries' lines too)."),
        click.Option(["-q", "--quiet"], count=True, expose_value=False, callback=_remember_logging,
                     help="Less logging: -q ERROR, -qq CRITICAL."),
        click.Option(["--log-level"], type=click.Choice(LOG_LEVELS, case_sensitive=False), expose_value=False,
                     envvar="ARCHIVER_LOG_LEVEL", callback=_remember_logging,
                     help="Log level, instead of -v/-q [env ARCHIVER_LOG_LEVEL]."),
    ]


def _refuse_repeats(parser):
    """A parser on which an option that takes one value may be given once: never silently the last."""
    parse = parser.parse_args

    def parse_args(args):
        opts, largs, order = parse(args)
        seen = set()
        for param in order:
            if isinstance(param, click.Option) and not (param.multiple or param.count or param.is_flag):
                if param.name in seen:
                    raise click.UsageError(f"{' / '.join(param.opts)} given more than once; give it once")
                seen.add(param.name)
        return opts, largs, order

    parser.parse_args = parse_args
    return parser


class Command(click.Command):
    """Every command takes -v/-q/--log-level (after it too) and refuses repeated single-value options."""

    #: Commands whose log is their output by default (a daemon's one line per commit).
    LOUD = frozenset({"run"})

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params.extend(_logging_options())

    def make_parser(self, ctx):
        return _refuse_repeats(super().make_parser(ctx))

    def invoke(self, ctx):
        import logging

        from archiver import logs

        chosen = ctx.meta.get("archiver.logging", {})
        default = logging.INFO if self.name in self.LOUD else logging.WARNING
        ctx.meta["archiver.log_level"] = logs.level_of(chosen.get("verbose", 0), chosen.get("quiet", 0),
                                                       chosen.get("log_level"), default)
        logs.configure(ctx.meta["archiver.log_level"])
        return super().invoke(ctx)


class Group(terminal.Group):
    """archiver's command group: exit codes and closed pipes (`terminal.Group`), the logging
    options on every command, a repeated single-value option refused."""

    command_class = Command
    group_class = type  # subgroups (catalog) are Groups too

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params.extend(_logging_options())

    def make_parser(self, ctx):
        return _refuse_repeats(super().make_parser(ctx))


def _split_topics(ctx, param, values) -> tuple[str, ...]:
    """`--topics a,b --topics c` -> (a, b, c): repeated topic options accumulate."""
    return tuple(dict.fromkeys(t.strip() for value in values or () for t in value.split(",") if t.strip()))


def topics_option(help_text: str, *names: str):
    return click.option("--topics", *names, "topics", multiple=True, callback=_split_topics,
                        help=f"{help_text} Comma-separated, repeatable.")


config_option = click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), envvar="ARCHIVER_CONFIG",
                             help="TOML config file [env ARCHIVER_CONFIG]")
kafka_option = click.option("--bootstrap-servers",
                            help="Kafka bootstrap servers [env ARCHIVER_KAFKA_BOOTSTRAP_SERVERS]")
registry_option = click.option("--schema-registry-url", help="Schema Registry URL [env ARCHIVER_SCHEMA_REGISTRY_URL]")
archive_option = click.option("--archive-url", help="s3://bucket/prefix or file:///path [env ARCHIVER_ARCHIVE_URL]")
