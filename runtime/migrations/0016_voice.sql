-- Voice calls (alerts/channels/voice.py): a page on the 'voice' channel is a phone call to
-- a person whose page nobody has acknowledged after the rules' [voice] after_s. The
-- constraint is 0006's, named by PostgreSQL's default.
ALTER TABLE pages DROP CONSTRAINT pages_channel_check;
ALTER TABLE pages ADD CONSTRAINT pages_channel_check
    CHECK (channel IN ('mqtt', 'webhook', 'sms', 'wecom', 'dingtalk', 'feishu', 'email',
                       'fire_service', 'voice'));
