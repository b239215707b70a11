
return roster({})
