"""curator's operators for the FiftyOne App.

Each operator is a form (``resolve_input``, validated against the curator
database before anything runs) and one call into
``curator.integrations.fiftyone.actions``; after it the FiftyOne dataset is
re-synced so the App shows the new state. Install: see README.md.

The long ones (score, select: they may train a model; push) may run as
delegated operations (``fiftyone delegated launch`` runs them; the App shows
their progress from ``ctx.set_progress``), and score, select and push act on
the user's selection, or else the current view when it is narrower than the
dataset (``ctx.selected``, ``ctx.view``).
"""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from curator.exceptions import CuratorError
from curator.integrations.fiftyone import actions


def _fail(inputs, name, message, label="curator cannot run this"):
    """An error shown in the form; it also blocks execution (an invalid property)."""
    prop = inputs.view(name, types.Error(label=label, description=message))
    prop.invalid = True
    prop.error_message = message
    return prop


def _invalid(prop, message):
    prop.invalid = True
    prop.error_message = message
    return prop


class CuratorOperator(foo.Operator):
    """Shared frame: link the App's dataset to curator, build the form, run, re-sync."""

    label = ""
    description = ""
    name = ""
    #: May run as a delegated operation (long work: training, scoring, pushing).
    delegable = False

    @property
    def config(self):
        return foo.OperatorConfig(
            name=self.name,
            label=f"curator: {self.label}",
            description=self.description,
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=self.delegable,
        )

    def link(self, ctx):
        return actions.link(ctx.dataset, secrets=dict(ctx.secrets or {}))

    def resolve_input(self, ctx):
        inputs = types.Object()
        try:
            link = self.link(ctx)
            self.form(ctx, inputs, link)
        except CuratorError as exc:
            _fail(inputs, "curator_error", str(exc))
        return types.Property(inputs, view=types.View(label=f"curator: {self.label}"))

    def form(self, ctx, inputs, link):
        inputs.md(self.description, name="about")

    def execute(self, ctx):
        link = self.link(ctx)
        result = self.run(ctx, link)
        sync = actions.refresh(link)
        if not ctx.delegated:  # a delegated run has no App to reload; the user refreshes when it is done
            ctx.trigger("reload_dataset")
        return {**result, "synced_samples": sync.samples}

    @staticmethod
    def progress(ctx):
        """``actions``' progress callback: the operation's progress bar (delegated runs)."""
        return lambda fraction, label: ctx.set_progress(progress=fraction, label=label)

    @staticmethod
    def scope(ctx):
        """curator ids of the selected samples, else of the current view when narrower; None: all."""
        return actions.scope_ids(ctx.dataset, ctx.view, ctx.selected, ctx.has_custom_view)

    @staticmethod
    def scope_note(ctx, inputs):
        if ctx.selected or ctx.has_custom_view:
            what = f"the {len(ctx.selected)} selected samples" if ctx.selected else "the samples of the current view"
            inputs.md(f"Acts on {what} only.", name="scope")

    def run(self, ctx, link):
        return {}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("summary", label="Result")
        return types.Property(outputs)


class RefreshCurator(CuratorOperator):
    name = "refresh_curator"
    label = "refresh fields and views"
    description = "Re-read scores, rounds, duplicates, labels and versions from curator into this dataset."

    def run(self, ctx, link):
        return {"summary": f"synced {actions.describe(link)}"}


class ScorePool(CuratorOperator):
    name = "score_pool"
    label = "score the pool"
    description = "Score the unlabeled pool (or its part you selected or see) with the current model."
    delegable = True

    def form(self, ctx, inputs, link):
        super().form(ctx, inputs, link)
        self.scope_note(ctx, inputs)
        options = actions.score_options(link)
        for key, spec in options.items():
            _add_field(inputs, key, spec, ctx.params.get(key))

    def run(self, ctx, link):
        return {"summary": actions.score(link, **_params(ctx, actions.score_options(link)), only=self.scope(ctx),
                                         progress=self.progress(ctx))}


class SelectBatch(CuratorOperator):
    name = "select_batch"
    label = "select the next batch"
    description = "Select the next batch to label with a policy and a budget, recorded as a round."
    delegable = True

    def form(self, ctx, inputs, link):
        super().form(ctx, inputs, link)
        self.scope_note(ctx, inputs)
        names = actions.policy_names()
        choices = types.Dropdown(label="Policy")
        for name in names:
            choices.add_choice(name, label=name)
        inputs.enum("policy", names, default=actions.DEFAULT_POLICY if actions.DEFAULT_POLICY in names else names[0],
                    required=True, label="Policy", view=choices)
        try:
            pool, note = actions.pool_in_scope(link, self.scope(ctx))
        except CuratorError as exc:
            _fail(inputs, "scope_error", str(exc))
            return
        budget = inputs.int("budget", required=True, label="Budget", default=min(10, max(pool, 1)),
                            description=f"How many samples to select ({pool} in the pool{note}).")
        problem = actions.check_budget(ctx.params.get("budget"), pool)
        if problem:
            _invalid(budget, problem)
        inputs.int("seed", default=0, label="Seed", description="Same pool, policy and seed: same batch.")
        inputs.str("model", default="", label="Model", description=actions.MODEL_HELP)

    def run(self, ctx, link):
        return {"summary": actions.select(link, ctx.params["policy"], ctx.params["budget"],
                                          int(ctx.params.get("seed") or 0), ctx.params.get("model") or None,
                                          only=self.scope(ctx), progress=self.progress(ctx))}


class PushToLabelStudio(CuratorOperator):
    name = "push_to_label_studio"
    label = "push a round to Label Studio"
    description = "Send the samples of a round (or those of it you selected or see) to Label Studio as tasks, ordered by rank."
    delegable = True

    def form(self, ctx, inputs, link):
        super().form(ctx, inputs, link)
        self.scope_note(ctx, inputs)
        rounds = actions.round_numbers(link)
        if not rounds:
            _fail(inputs, "no_rounds", "no round selected yet; run 'curator: select the next batch' first")
            return
        labels = [str(r) for r in rounds]
        seen = actions.round_of(link, self.scope(ctx)) if (ctx.selected or ctx.has_custom_view) else None
        inputs.enum("round", labels, default=str(seen) if seen else labels[-1], required=True, label="Round",
                    description="The round of the selected samples." if seen else None)
        inputs.str("project", default=actions.default_project(link), label="Label Studio project")

    def run(self, ctx, link):
        return {"summary": actions.push(link, int(ctx.params["round"]), ctx.params.get("project") or None,
                                        only=self.scope(ctx), progress=self.progress(ctx))}


class PullAnnotations(CuratorOperator):
    name = "pull_annotations"
    label = "pull annotations"
    description = "Pull finished annotations from Label Studio into curator."

    def form(self, ctx, inputs, link):
        super().form(ctx, inputs, link)
        inputs.str("project", default=actions.default_project(link), label="Label Studio project")

    def run(self, ctx, link):
        return {"summary": actions.pull(link, ctx.params.get("project") or None)}


class CreateVersion(CuratorOperator):
    name = "create_version"
    label = "create a labeled-set version"
    description = "Freeze the current agreed labels as an immutable, named version."

    def form(self, ctx, inputs, link):
        super().form(ctx, inputs, link)
        prop = inputs.str("name", required=True, label="Version name")
        problem = actions.check_version_name(link, ctx.params.get("name"))
        if problem:
            _invalid(prop, problem)
        inputs.str("message", label="Message")

    def run(self, ctx, link):
        problem = actions.check_version_name(link, ctx.params.get("name"))
        if problem:
            raise ValueError(problem)
        return {"summary": actions.create_version(link, ctx.params["name"], ctx.params.get("message") or None)}


def _add_field(inputs, key, spec, value):
    kind, default, choices = spec["type"], spec.get("default"), spec.get("choices")
    kw = {"label": spec.get("label", key), "description": spec.get("description")}
    if choices:
        inputs.enum(key, choices, default=default, view=types.Dropdown(label=kw["label"]), **kw)
    elif kind == "int":
        inputs.int(key, default=default, min=0, **kw)
    elif kind == "bool":
        inputs.bool(key, default=bool(default), **kw)
    else:
        inputs.str(key, default=default, **kw)


def _params(ctx, options):
    return {k: ctx.params[k] for k in options if ctx.params.get(k) is not None}


OPERATORS = (RefreshCurator, ScorePool, SelectBatch, PushToLabelStudio, PullAnnotations, CreateVersion)


def register(p):
    for operator in OPERATORS:
        p.register(operator)
