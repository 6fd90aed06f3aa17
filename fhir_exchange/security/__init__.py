"""Who is asking, and what they may see and do: the actor, institutions and clients, access decisions."""
