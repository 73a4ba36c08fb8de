DROP TABLE relay_heartbeats;
