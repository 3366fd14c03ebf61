"""Every exception fraktal raises on purpose.

The split follows who broke the rules: the user (`UsageError`), a peer on the
network (`ProtocolError`), or fraktal itself (`TransitionError`). Messages
are whole sentences that state what was expected and what came.
"""


class FraktalError(Exception):
    """Base class of every error fraktal raises on purpose."""


class UsageError(FraktalError):
    """A parameter given by the user is out of range or malformed.

    The message is one line that says what was wrong and what is allowed; the
    CLI prints it with exit code 2 and the dashboard returns it with HTTP 400.
    """


class PrecisionError(UsageError):
    """The view asks for a pixel spacing that float64 cannot resolve."""


class ProtocolError(FraktalError):
    """A peer sent bytes or a message that breaks the wire protocol.

    The connection that carried it is answered with an error frame and closed;
    nothing else is affected.
    """


class FrameTooLarge(ProtocolError):
    """A frame's length prefix exceeds the limit; its body is never read."""


class AuthenticationError(ProtocolError):
    """A peer failed the token challenge or spoke an unsupported version."""


class TransitionError(FraktalError):
    """The scheduler was asked for a tile move that its state machine forbids.

    This is a bug in fraktal, never the fault of a peer.
    """


class JobStoreError(FraktalError):
    """A job folder is missing, unreadable, or belongs to another job."""


class UnknownJobError(FraktalError):
    """Someone named a job id that this master does not know."""


class Interrupted(FraktalError):
    """The user stopped a render with Ctrl-C or SIGTERM; the work is kept."""
