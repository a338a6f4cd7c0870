"""Errors raised while a flow is built or planned: the user's mistakes, named plainly."""


class FlowError(ValueError):
    """The flow is malformed: the message names the step and what to do."""
