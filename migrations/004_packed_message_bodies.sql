-- The writer's one-statement path with its sealed bodies packed into one bytea parameter.
--
-- write_messages_if_expected (003) took the bodies as bytea[]. node-postgres sends an array as
-- its text literal, so every body went out hex-encoded (twice its size, built as strings in the
-- app) and PostgreSQL parsed it back with array_in and byteain; with created_at as a
-- timestamptz[], each row's timestamp was formatted and parsed again too, though every row of a
-- batch has the batch's time. Here the bodies travel as one bytea (node-postgres sends a Buffer in
-- binary: no encoding either way) with each body's start (1-based) and length, and created_at is
-- p_now. The statement is otherwise 003's.
--
-- 003's function stays, so that a process of the previous version keeps writing while a rolling
-- deploy replaces it; a later migration can drop it.
CREATE FUNCTION write_packed_messages_if_expected(
  p_room_ids uuid[],
  p_expected bigint[],
  p_counts int[],
  p_now timestamptz,
  p_room_id uuid[],
  p_seq bigint[],
  p_participant_id uuid[],
  p_kind text[],
  p_client_msg_id uuid[],
  p_bodies bytea,
  p_body_start int[],
  p_body_length int[],
  p_sender_ip inet[]
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
    SELECT t.room_id, t.seq, t.participant_id, t.kind, t.client_msg_id,
           substring(p_bodies FROM t.body_start FOR t.body_length), t.sender_ip, p_now
    FROM unnest(p_room_id, p_seq, p_participant_id, p_kind, p_client_msg_id, p_body_start, p_body_length, p_sender_ip)
      AS t(room_id, seq, participant_id, kind, client_msg_id, body_start, body_length, sender_ip)
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
