"""The voter session: states, events, effects and the sans-I/O state machine."""

from appliance.session._state import BUSY_STATES, ERROR_STATES, TRANSITIONS, IllegalTransition, State, allowed
from appliance.session.session import Session, Timeouts

__all__ = ["BUSY_STATES", "ERROR_STATES", "TRANSITIONS", "IllegalTransition", "Session", "State", "Timeouts", "allowed"]
