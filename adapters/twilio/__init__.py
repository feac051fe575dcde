"""The ``twilio`` adapter: Twilio Voice and TaskRouter webhooks (DESIGN section 8).

Routes, mounted under ``/v1/vendors/{vendor}``; every request must carry a valid
``X-Twilio-Signature`` (:mod:`.signature`) over ``public_url`` + the request's path and
query string, or it is answered 403 and nothing changes:

* ``POST /voice`` — the incoming-call URL: the called number (``To``) names a queue or an
  agent (``numbers``); the answer is TwiML (:mod:`.twiml`): ``<Dial>`` to the assigned
  agent's ``agent_targets`` entry, ``<Reject reason="busy"/>`` when rejected, a hold loop
  (``<Pause>`` or ``<Play>``, then ``<Redirect>`` back here) while the call waits in a
  queue. The ``<Dial>`` action and the hold ``<Redirect>`` request this URL again for the
  same call; the answer follows the interaction's current state (a call waiting is dialled
  once assigned; a call re-routed after a no-answer rings the next agent).
* ``POST /status`` — status callbacks of the caller's call and of the agent's leg.
* ``POST /taskrouter/assignment`` — ``{"instruction": "accept"}`` or ``{"instruction": "reject"}``.
* ``POST /taskrouter/events`` — reservation and task events move sessions (204).

How Twilio's parameters become events, and their event ids: :mod:`.mapping`.
"""

from .adapter import TwilioAdapter, TwilioConfig

__all__ = ["TwilioAdapter", "TwilioConfig"]
