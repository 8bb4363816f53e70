"""Session affinity for the Ray Serve replicas: each conversation's turns go to one replica.

Every replica keeps its own feature cache (decoded frames, encoder outputs) and its own KV
reuse, so a follow-up turn that resends the same video is cheap only on the replica that saw
it first. Ray's default router picks the less busy of two random replicas, which with N
replicas sends a follow-up elsewhere N-1 times in N, and that replica decodes and encodes the
video again.

A client that names its conversation in the ``X-Session-Id`` header (Ray's session header;
``RAY_SERVE_SESSION_ID_HEADER_KEY`` renames it) is routed by rendezvous hashing: the session's
replicas are ranked by a hash of (session, replica), so the ranking does not depend on the
order Ray lists the replicas in, and a replica coming or going moves only the sessions that
ranked it first. Hashing alone can pile sessions onto one replica while another idles (16
conversations over 2 replicas split 10/6 as easily as 8/8), so loads are bounded: a replica
already holding more than ``SPILL_AT`` times its fair share of the requests in flight (counted
by the router as it routes and they complete) goes to the back of the session's order, and
the session's next replica takes the turn. Ray tries the ranks in order and also moves on when
a replica's queue is full. Requests without the header are routed as Ray's default does: the
less busy of two random replicas.
"""

from __future__ import annotations

import hashlib
import math
import random
from typing import TYPE_CHECKING

from ray.serve.request_router import FIFOMixin, RequestRouter

if TYPE_CHECKING:
    from ray.serve.request_router import PendingRequest, ReplicaID, ReplicaResult, RunningReplica

# A replica stays first in a session's order until it holds more than this times its fair share
# (requests in flight / replicas, the new one counted) of the requests in flight.
SPILL_AT = 1.25


def rendezvous_order(session: str, replica_ids: list[str]) -> list[str]:
    """``replica_ids`` ranked for ``session``, best first (highest-random-weight hashing)."""
    def weight(replica_id: str) -> bytes:
        return hashlib.blake2b(f"{session}\x00{replica_id}".encode(), digest_size=8).digest()

    return sorted(replica_ids, key=weight, reverse=True)


def rank_replicas(candidates: list, session: str, loads: dict[str, int] | None = None,
                  spill_at: float = SPILL_AT) -> list[list]:
    """Ray's ranks for one request: the session's replicas one per rank in rendezvous order,
    those over their load bound (``loads``: requests in flight per replica id) moved to the back;
    without a session, two random replicas in one rank (Ray takes the less busy)."""
    if not candidates:
        return []
    if not session:
        return [random.sample(candidates, min(2, len(candidates)))]
    by_id = {r.replica_id.unique_id: r for r in candidates}
    order = rendezvous_order(session, list(by_id))
    if loads:
        bound = math.ceil(spill_at * (sum(loads.get(rid, 0) for rid in order) + 1) / len(order))
        under = [rid for rid in order if loads.get(rid, 0) < bound]
        order = under + [rid for rid in order if rid not in under]
    return [[by_id[rid]] for rid in order]


class SessionAffinityRouter(FIFOMixin, RequestRouter):
    """Ray Serve request router keeping a session's requests on one replica (module docstring)."""

    def initialize_state(self, spill_at: float = SPILL_AT, **kwargs) -> None:
        # Ray Serve calls this right after constructing the router, before any request.
        self._spill_at = spill_at
        self._in_flight: dict[str, set[str]] = {}  # replica id -> internal ids of requests routed there

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        session = pending_request.metadata.session_id if pending_request is not None else ""
        loads = {rid: len(ids) for rid, ids in self._in_flight.items()}
        return rank_replicas(candidate_replicas, session, loads, self._spill_at)

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID,
                          result: ReplicaResult) -> None:
        self._in_flight.setdefault(replica_id.unique_id, set()).add(pending_request.metadata.internal_request_id)

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        # Ray also calls this for a request it did not send (a probe that was turned down): discard.
        self._in_flight.get(replica_id.unique_id, set()).discard(internal_request_id)
