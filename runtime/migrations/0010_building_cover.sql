-- Who covers a building. A worker's area (worker_areas) is a grid, a community or a street
-- office, and covers every building under it. This view is the one definition of that rule,
-- read by the alert core's ladder (alerts/ladder.py), the on-duty query
-- (devices/queries.py), ticket assignment (devices/monitor.py TECHNICIAN) and the demo.
--
-- Three branches rather than one join on an OR, so a filter on building_id reaches every
-- branch and each uses its index. A worker with areas on two levels appears once per level;
-- `distance` (1 grid, 2 community, 3 street) lets a reader keep the nearest.

CREATE VIEW building_cover AS
    SELECT b.id AS building_id, a.worker_id, 'grid'::text AS level, 1 AS distance
    FROM buildings b
    JOIN worker_areas a ON a.grid_id = b.grid_id
  UNION ALL
    SELECT b.id, a.worker_id, 'community', 2
    FROM buildings b
    JOIN grids g ON g.id = b.grid_id
    JOIN worker_areas a ON a.community_id = g.community_id
  UNION ALL
    SELECT b.id, a.worker_id, 'street', 3
    FROM buildings b
    JOIN grids g ON g.id = b.grid_id
    JOIN communities c ON c.id = g.community_id
    JOIN worker_areas a ON a.street_id = c.street_id;

-- The community and street branches look areas up by those columns (the grid one has its
-- index since 0002).
CREATE INDEX worker_areas_community ON worker_areas (community_id) WHERE community_id IS NOT NULL;
CREATE INDEX worker_areas_street ON worker_areas (street_id) WHERE street_id IS NOT NULL;
