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
ranked it first. Ray tries the ranks in order and takes the next one when a replica's queue
is full, so a busy session spills over instead of waiting. Requests without the header are
routed as Ray's default does: the less busy of two random replicas.
"""

from __future__ import annotations

import hashlib
import random
from typing import TYPE_CHECKING

from ray.serve.request_router import FIFOMixin, RequestRouter

if TYPE_CHECKING:
    from ray.serve.request_router import PendingRequest, RunningReplica


def rendezvous_order(session: str, replica_ids: list[str]) -> list[str]:
    """``replica_ids`` ranked for ``session``, best first (highest-random-weight hashing)."""
    def weight(replica_id: str) -> bytes:
        return hashlib.blake2b(f"{session}\x00{replica_id}".encode(), digest_size=8).digest()

    return sorted(replica_ids, key=weight, reverse=True)


def rank_replicas(candidates: list, session: str) -> list[list]:
    """Ray's ranks for one request: the session's replicas one per rank in rendezvous order;
    without a session, two random replicas in one rank (Ray takes the less busy)."""
    if not candidates:
        return []
    if not session:
        return [random.sample(candidates, min(2, len(candidates)))]
    by_id = {r.replica_id.unique_id: r for r in candidates}
    return [[by_id[rid]] for rid in rendezvous_order(session, list(by_id))]


class SessionAffinityRouter(FIFOMixin, RequestRouter):
    """Ray Serve request router keeping a session's requests on one replica (module docstring)."""

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        session = pending_request.metadata.session_id if pending_request is not None else ""
        return rank_replicas(candidate_replicas, session)
