-- Message inserts, lighter (measured with npm run bench, and perf on the writer's backend).
--
-- 1. messages.participant_id no longer REFERENCES participants. A foreign key is checked per
--    inserted row by a trigger that runs a query and locks the referenced row FOR KEY SHARE, and
--    PostgreSQL records that lock in the row itself: every commit dirtied the page of each
--    sender's participant row and wrote a WAL record for it. Without it PostgreSQL spent about
--    55 instead of 69 µs per message, and the app took 5,770-5,799 messages/s instead of
--    4,918-5,284 (npm run bench, offered 8,000/s, with the change below). Its ON DELETE
--    CASCADE never ran: no participant is ever deleted. The sender's id comes from the room
--    access the app read for that room and device, the only way a message is written.
--    messages.room_id keeps its foreign key: the writer holds that room's row lock already, so
--    the check takes no lock of its own.
--
-- 2. The writer's function (002) found the rows that a repeated client_msg_id skipped with an
--    anti-join of the batch against the inserted rows, a nested loop (batch size squared). It now
--    counts the inserted rows, and looks the skipped ones up by key only when the count falls
--    short (a retried send).
ALTER TABLE messages DROP CONSTRAINT messages_participant_id_fkey;

CREATE OR REPLACE FUNCTION write_messages_if_expected(
  p_room_ids uuid[],
  p_expected bigint[],
  p_counts int[],
  p_now timestamptz,
  p_room_id uuid[],
  p_seq bigint[],
  p_participant_id uuid[],
  p_kind text[],
  p_client_msg_id uuid[],
  p_body_sealed bytea[],
  p_sender_ip inet[],
  p_created_at timestamptz[]
) RETURNS TABLE (reserved_rooms text[], skipped_rows text[])
LANGUAGE plpgsql AS $$
DECLARE
  v_reserved uuid[];
  v_wanted int;
  v_inserted int := 0;
BEGIN
  WITH reserved AS (
    UPDATE rooms AS r
    SET last_seq = r.last_seq + e.n, last_activity_at = p_now
    FROM unnest(p_room_ids, p_expected, p_counts) AS e(id, last_seq, n)
    WHERE r.id = e.id
      AND r.id IN (SELECT id FROM rooms WHERE id = ANY (p_room_ids) ORDER BY id FOR UPDATE)
      AND r.last_seq = e.last_seq AND r.status = 'active' AND r.expires_at > p_now
    RETURNING r.id
  )
  SELECT coalesce(array_agg(reserved.id), '{}') INTO v_reserved FROM reserved;

  SELECT count(*) INTO v_wanted FROM unnest(p_room_id) AS t(room_id) WHERE t.room_id = ANY (v_reserved);
  IF v_wanted > 0 THEN
    INSERT INTO messages (room_id, seq, participant_id, kind, client_msg_id, body_sealed, sender_ip, created_at)
    SELECT t.room_id, t.seq, t.participant_id, t.kind, t.client_msg_id, t.body_sealed, t.sender_ip, t.created_at
    FROM unnest(p_room_id, p_seq, p_participant_id, p_kind, p_client_msg_id, p_body_sealed, p_sender_ip, p_created_at)
      AS t(room_id, seq, participant_id, kind, client_msg_id, body_sealed, sender_ip, created_at)
    WHERE t.room_id = ANY (v_reserved)
    ON CONFLICT (participant_id, client_msg_id) DO NOTHING;
    GET DIAGNOSTICS v_inserted = ROW_COUNT;
  END IF;

  reserved_rooms := v_reserved::text[];
  IF v_inserted = v_wanted THEN
    skipped_rows := '{}';
  ELSE
    SELECT coalesce(array_agg(t.room_id::text || ':' || t.seq), '{}') INTO skipped_rows
    FROM unnest(p_room_id, p_seq) AS t(room_id, seq)
    WHERE t.room_id = ANY (v_reserved)
      AND NOT EXISTS (SELECT 1 FROM messages AS m WHERE m.room_id = t.room_id AND m.seq = t.seq);
  END IF;
  RETURN NEXT;
END
$$;
