include $(BR2_EXTERNAL_CARDWALL_PATH)/package/cardwall.mk
include $(sort $(wildcard $(BR2_EXTERNAL_CARDWALL_PATH)/package/*/*.mk))
